"""DKD, DIST, logit standardization, AT, hints, RKD and SP against transcriptions of the authors' reference code.

Each reference below is copied from the named repository and file, with only these changes: methods of `nn.Module`
classes become functions (renamed where two references would clash, e.g. DIST's `cosine_similarity`), lines are
wrapped by the formatter, and the deprecated `size_average=False` / `reduction='elementwise_mean'` arguments are
written as their current equivalents `reduction="sum"` / `reduction="mean"`.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hf_distill.losses import (
    attention_transfer_loss,
    cosine_hidden_loss,
    dist_loss,
    dkd_loss,
    hint_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    similarity_preserving_loss,
    soft_target_loss,
    standardize_logits,
)

TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}


# Reference: megvii-research/mdistiller mdistiller/distillers/DKD.py
def ref_dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    gt_mask = _get_gt_mask(logits_student, target)
    other_mask = _get_other_mask(logits_student, target)
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * (temperature**2) / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd_loss = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum") * (temperature**2) / target.shape[0]
    )
    return alpha * tckd_loss + beta * nckd_loss


def _get_gt_mask(logits, target):
    target = target.reshape(-1)
    mask = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1).bool()
    return mask


def _get_other_mask(logits, target):
    target = target.reshape(-1)
    mask = torch.ones_like(logits).scatter_(1, target.unsqueeze(1), 0).bool()
    return mask


def cat_mask(t, mask1, mask2):
    t1 = (t * mask1).sum(dim=1, keepdims=True)
    t2 = (t * mask2).sum(1, keepdims=True)
    rt = torch.cat([t1, t2], dim=1)
    return rt


# Reference: hunto/image_classification_sota lib/models/losses/dist_kd.py (the DIST loss linked from hunto/DIST_KD)
def dist_cosine_similarity(a, b, eps=1e-8):
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def pearson_correlation(a, b, eps=1e-8):
    return dist_cosine_similarity(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1), eps)


def inter_class_relation(y_s, y_t):
    return 1 - pearson_correlation(y_s, y_t).mean()


def intra_class_relation(y_s, y_t):
    return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))


def ref_dist(z_s, z_t, beta=1.0, gamma=1.0, tau=1.0):  # DIST.forward
    y_s = (z_s / tau).softmax(dim=1)
    y_t = (z_t / tau).softmax(dim=1)
    inter_loss = tau**2 * inter_class_relation(y_s, y_t)
    intra_loss = tau**2 * intra_class_relation(y_s, y_t)
    kd_loss = beta * inter_loss + gamma * intra_loss
    return kd_loss


# Reference: hunto/DIST_KD segmentation/losses/dist_kd.py (DIST.forward, same relations, no temperature)
def ref_dist_segmentation(y_s, y_t, beta=1.0, gamma=1.0):
    assert y_s.ndim in (2, 4)
    if y_s.ndim == 4:
        num_classes = y_s.shape[1]
        y_s = y_s.transpose(1, 3).reshape(-1, num_classes)
        y_t = y_t.transpose(1, 3).reshape(-1, num_classes)
    y_s = y_s.softmax(dim=1)
    y_t = y_t.softmax(dim=1)
    inter_loss = inter_class_relation(y_s, y_t)
    intra_loss = intra_class_relation(y_s, y_t)
    loss = beta * inter_loss + gamma * intra_loss
    return loss


# Reference: sunshangquan/logit-standardization-KD mdistiller/distillers/KD.py
def ref_normalize(logit):
    mean = logit.mean(dim=-1, keepdims=True)
    stdv = logit.std(dim=-1, keepdims=True)
    return (logit - mean) / (1e-7 + stdv)


# Reference: szagoruyko/attention-transfer utils.py
def at(x):
    return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))


def at_loss(x, y):
    return (at(x) - at(y)).pow(2).mean()


# Reference: HobbitLong/RepDistiller distiller_zoo/AT.py (Attention.at_loss and Attention.at, with p)
def ref_repdistiller_at_loss(f_s, f_t, p=2):
    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    else:
        pass
    return (ref_repdistiller_at(f_s, p) - ref_repdistiller_at(f_t, p)).pow(2).mean()


def ref_repdistiller_at(f, p):
    return F.normalize(f.pow(p).mean(1).view(f.size(0), -1))


# Reference: HobbitLong/RepDistiller distiller_zoo/FitNet.py (HintLoss)
def ref_hint_loss(f_s, f_t):
    crit = nn.MSELoss()
    loss = crit(f_s, f_t)
    return loss


# Reference: HobbitLong/RepDistiller distiller_zoo/NST.py (NSTLoss.nst_loss and NSTLoss.poly_kernel)
def ref_nst_loss(f_s, f_t):
    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    else:
        pass

    f_s = f_s.view(f_s.shape[0], f_s.shape[1], -1)
    f_s = F.normalize(f_s, dim=2)
    f_t = f_t.view(f_t.shape[0], f_t.shape[1], -1)
    f_t = F.normalize(f_t, dim=2)

    # set full_loss as False to avoid unnecessary computation
    full_loss = True
    if full_loss:
        return poly_kernel(f_t, f_t).mean().detach() + poly_kernel(f_s, f_s).mean() - 2 * poly_kernel(f_s, f_t).mean()
    else:
        return poly_kernel(f_s, f_s).mean() - 2 * poly_kernel(f_s, f_t).mean()


def poly_kernel(a, b):
    a = a.unsqueeze(1)
    b = b.unsqueeze(2)
    res = (a * b).sum(-1).pow(2)
    return res


# Reference: lenscloth/RKD metric/utils.py (pdist) and metric/loss.py (RkdDistance.forward, RKdAngle.forward)
def pdist(e, squared=False, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps)

    if not squared:
        res = res.sqrt()

    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def ref_rkd_distance(student, teacher):
    with torch.no_grad():
        t_d = pdist(teacher, squared=False)
        mean_td = t_d[t_d > 0].mean()
        t_d = t_d / mean_td

    d = pdist(student, squared=False)
    mean_d = d[d > 0].mean()
    d = d / mean_d

    loss = F.smooth_l1_loss(d, t_d, reduction="mean")
    return loss


def ref_rkd_angle(student, teacher):
    # N x C
    # N x N x C

    with torch.no_grad():
        td = teacher.unsqueeze(0) - teacher.unsqueeze(1)
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)

    sd = student.unsqueeze(0) - student.unsqueeze(1)
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)

    loss = F.smooth_l1_loss(s_angle, t_angle, reduction="mean")
    return loss


# Reference: HobbitLong/RepDistiller distiller_zoo/SP.py (Similarity.similarity_loss)
def ref_similarity_loss(f_s, f_t):
    bsz = f_s.shape[0]
    f_s = f_s.view(bsz, -1)
    f_t = f_t.view(bsz, -1)

    G_s = torch.mm(f_s, torch.t(f_s))
    # G_s = G_s / G_s.norm(2)
    G_s = torch.nn.functional.normalize(G_s)
    G_t = torch.mm(f_t, torch.t(f_t))
    # G_t = G_t / G_t.norm(2)
    G_t = torch.nn.functional.normalize(G_t)

    G_diff = G_t - G_s
    loss = (G_diff * G_diff).view(-1, 1).sum(0) / (bsz * bsz)
    return loss


def _randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _assert_matches_reference(ours, reference, student, teacher):
    """Equal values, and equal gradients with respect to the student input."""
    student_ours = student.clone().requires_grad_()
    student_reference = student.clone().requires_grad_()
    value = ours(student_ours, teacher)
    expected = reference(student_reference, teacher)
    assert value.shape == ()
    torch.testing.assert_close(value, expected.reshape(()), **TOLERANCE)
    (gradient,) = torch.autograd.grad(value, student_ours)
    (expected_gradient,) = torch.autograd.grad(expected.sum(), student_reference)
    torch.testing.assert_close(gradient, expected_gradient, **TOLERANCE)


# --- DKD ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "beta", "temperature"), [(1.0, 8.0, 4.0), (1.0, 0.5, 1.0), (0.3, 2.0, 2.5)])
def test_dkd_matches_mdistiller(alpha, beta, temperature):
    student, teacher = _randn(16, 10, seed=1, scale=3), _randn(16, 10, seed=2, scale=3)
    labels = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(3))
    _assert_matches_reference(
        lambda s, t: dkd_loss(s, t, labels, alpha, beta, temperature),
        lambda s, t: ref_dkd_loss(s, t, labels, alpha, beta, temperature),
        student,
        teacher,
    )


def test_dkd_decomposes_hinton_kd():
    """KD = TCKD + (1 - p_t^T) NCKD per example (the paper's Eq. 3), each with T² as in mdistiller."""
    student, teacher, temperature = _randn(6, 7, seed=4, scale=2), _randn(6, 7, seed=5, scale=2), 3.0
    labels = torch.tensor([0, 3, 6, 2, 2, 5])
    for i in range(len(labels)):
        s, t, y = student[i : i + 1], teacher[i : i + 1], labels[i : i + 1]
        teacher_target_prob = F.softmax(t / temperature, dim=1)[0, y].item()
        decomposed = dkd_loss(s, t, y, alpha=1.0, beta=1.0 - teacher_target_prob, temperature=temperature)
        torch.testing.assert_close(decomposed, soft_target_loss(s, t, temperature), rtol=1e-5, atol=1e-6)


def test_dkd_is_zero_for_identical_logits_and_rejects_bad_shapes():
    logits, labels = _randn(5, 4, seed=6), torch.tensor([0, 1, 2, 3, 0])
    # T² β = 128 scales float32 rounding of the KL terms.
    torch.testing.assert_close(dkd_loss(logits, logits.clone(), labels), torch.tensor(0.0), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(4,\)"):
        dkd_loss(logits, logits, labels[:4])
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(5, 4\)"):
        dkd_loss(logits, logits[:, :3], labels)


# --- DIST --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "gamma", "temperature"), [(1.0, 1.0, 1.0), (1.0, 1.0, 4.0), (2.0, 0.5, 2.0)])
def test_dist_matches_authors_code(beta, gamma, temperature):
    student, teacher = _randn(16, 10, seed=1, scale=3), _randn(16, 10, seed=2, scale=3)
    _assert_matches_reference(
        lambda s, t: dist_loss(s, t, beta, gamma, temperature),
        lambda s, t: ref_dist(s, t, beta, gamma, temperature),
        student,
        teacher,
    )


def test_dist_on_maps_matches_the_segmentation_variant():
    student, teacher = _randn(2, 5, 3, 4, seed=1, scale=2), _randn(2, 5, 3, 4, seed=2, scale=2)  # (B, C, H, W)
    _assert_matches_reference(
        lambda s, t: dist_loss(s.permute(0, 2, 3, 1), t.permute(0, 2, 3, 1), beta=1.0, gamma=2.0),
        lambda s, t: ref_dist_segmentation(s, t, beta=1.0, gamma=2.0),
        student,
        teacher,
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_dist_is_zero_for_identical_logits(temperature):
    # Up to the authors' eps of 1e-8 added to the cosine's denominator: T² · 1e-8 / |y - mean(y)|², which grows as the
    # softmax flattens (about 1e-5 at T = 4 here).
    logits = _randn(8, 10, seed=7, scale=3)
    zero = torch.tensor(0.0)
    torch.testing.assert_close(dist_loss(logits, logits.clone(), temperature=temperature), zero, **TOLERANCE)


# --- Logit standardization ---------------------------------------------------------------------------------------


def test_standardize_logits_matches_reference_and_has_zero_mean_unit_std():
    logits = _randn(3, 5, 11, seed=8, scale=4) + 2.0
    _assert_matches_reference(
        lambda z, _: standardize_logits(z).pow(3).sum(), lambda z, _: ref_normalize(z).pow(3).sum(), logits, None
    )
    standardized = standardize_logits(logits)
    assert standardized.shape == logits.shape
    torch.testing.assert_close(standardized.mean(-1), torch.zeros(3, 5), rtol=0, atol=1e-6)
    torch.testing.assert_close(standardized.std(-1), torch.ones(3, 5), rtol=0, atol=1e-6)  # unbiased, as torch.std
    with pytest.raises(ValueError, match="at least 2 classes"):
        standardize_logits(torch.zeros(4, 1))


# --- Attention transfer ------------------------------------------------------------------------------------------


def test_attention_transfer_matches_authors_code():
    student, teacher = _randn(4, 3, 5, 6, seed=1), _randn(4, 8, 5, 6, seed=2)  # channel counts may differ
    _assert_matches_reference(attention_transfer_loss, at_loss, student, teacher)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_attention_transfer_matches_repdistiller_with_p(p):
    student, teacher = _randn(4, 3, 6, 6, seed=3), _randn(4, 5, 6, 6, seed=4)
    _assert_matches_reference(
        lambda s, t: attention_transfer_loss(s, t, p=p),
        lambda s, t: ref_repdistiller_at_loss(s, t, p),
        student,
        teacher,
    )


def test_attention_transfer_is_zero_for_identical_maps_and_rejects_other_sizes():
    feature = _randn(2, 3, 4, 4, seed=5)
    torch.testing.assert_close(attention_transfer_loss(feature, feature.clone()), torch.tensor(0.0), **TOLERANCE)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(2, 3, 8, 8\)"):
        attention_transfer_loss(feature, _randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(2, 12\)"):
        attention_transfer_loss(feature, _randn(2, 12))


# --- Hints -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 6, 3, 5), (4, 7, 6), (4, 6)])
def test_l2_hint_matches_repdistiller_hint_loss(shape):
    _assert_matches_reference(hint_loss, ref_hint_loss, _randn(*shape, seed=1), _randn(*shape, seed=2))


@pytest.mark.parametrize("shape", [(4, 6, 3, 5), (4, 7, 6), (4, 6)])
def test_l1_and_cosine_hints_match_hand_computations(shape):
    student, teacher = _randn(*shape, seed=1), _randn(*shape, seed=2)
    torch.testing.assert_close(hint_loss(student, teacher, "l1"), (student - teacher).abs().mean(), **TOLERANCE)
    channels_last = (student.movedim(1, -1), teacher.movedim(1, -1)) if len(shape) == 4 else (student, teacher)
    torch.testing.assert_close(hint_loss(student, teacher, "cosine"), cosine_hidden_loss(*channels_last), **TOLERANCE)


def test_mmd_hint_matches_repdistiller_nst():
    student, teacher = _randn(3, 6, 4, 5, seed=1), _randn(3, 6, 4, 5, seed=2)
    _assert_matches_reference(lambda s, t: hint_loss(s, t, "mmd"), ref_nst_loss, student, teacher)


def test_mmd_hint_on_hidden_states_treats_hidden_units_as_neurons():
    student, teacher = _randn(3, 7, 5, seed=3), _randn(3, 7, 5, seed=4)  # (B, L, H)
    _assert_matches_reference(
        lambda s, t: hint_loss(s, t, "mmd"),
        lambda s, t: ref_nst_loss(s.transpose(1, 2).unsqueeze(-1), t.transpose(1, 2).unsqueeze(-1)),
        student,
        teacher,
    )
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        hint_loss(student[:, 0], teacher[:, 0], "mmd")


@pytest.mark.parametrize("kind", ["l2", "l1", "cosine", "mmd"])
def test_hints_are_zero_for_identical_features(kind):
    feature = _randn(2, 4, 3, 3, seed=6)
    torch.testing.assert_close(hint_loss(feature, feature.clone(), kind), torch.tensor(0.0), **TOLERANCE)


def test_hint_rejects_different_shapes_and_unknown_kinds():
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 5\)"):
        hint_loss(_randn(2, 4), _randn(2, 5))
    with pytest.raises(ValueError, match="Unknown hint kind 'l3'"):
        hint_loss(_randn(2, 4), _randn(2, 4), "l3")


# --- RKD and SP --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "reference"),
    [(rkd_distance_loss, ref_rkd_distance), (rkd_angle_loss, ref_rkd_angle)],
    ids=["distance", "angle"],
)
def test_rkd_matches_authors_code(ours, reference):
    student, teacher = _randn(8, 5, seed=1), _randn(8, 12, seed=2, scale=3)  # widths may differ
    _assert_matches_reference(ours, reference, student, teacher)


def test_similarity_preserving_matches_repdistiller():
    student, teacher = _randn(6, 4, 3, 3, seed=1), _randn(6, 8, 2, 2, seed=2)
    _assert_matches_reference(similarity_preserving_loss, ref_similarity_loss, student, teacher)


@pytest.mark.parametrize("loss", [rkd_distance_loss, rkd_angle_loss, similarity_preserving_loss])
def test_relation_losses_flatten_examples_and_are_zero_for_identical_features(loss):
    student, teacher = _randn(5, 2, 3, 2, seed=3), _randn(5, 4, 3, seed=4)
    torch.testing.assert_close(loss(student, teacher), loss(student.flatten(1), teacher.flatten(1)), **TOLERANCE)
    torch.testing.assert_close(loss(student, student.clone()), torch.tensor(0.0), **TOLERANCE)
    with pytest.raises(ValueError, match=r"\(5, 2, 3, 2\).*\(4, 12\)"):
        loss(student, teacher[:4].flatten(1))


def test_rkd_is_invariant_to_the_scale_of_the_embeddings():
    student, teacher = _randn(6, 4, seed=5), _randn(6, 9, seed=6)
    for loss in (rkd_distance_loss, rkd_angle_loss):
        torch.testing.assert_close(loss(student, teacher), loss(student, 10.0 * teacher), rtol=1e-5, atol=1e-6)


# --- Gradients reach only the student ----------------------------------------------------------------------------

_EVERY_LOSS = {
    "dkd": (lambda s, t: dkd_loss(s, t, torch.tensor([0, 1, 2, 3])), (4, 5), (4, 5)),
    "dist": (dist_loss, (4, 5), (4, 5)),
    "standardized_kd": (lambda s, t: soft_target_loss(standardize_logits(s), standardize_logits(t)), (4, 5), (4, 5)),
    "attention_transfer": (attention_transfer_loss, (4, 3, 5, 5), (4, 6, 5, 5)),
    "hint_l2": (hint_loss, (4, 3, 5, 5), (4, 3, 5, 5)),
    "hint_mmd": (lambda s, t: hint_loss(s, t, "mmd"), (4, 3, 5, 5), (4, 3, 5, 5)),
    "rkd_distance": (rkd_distance_loss, (4, 6), (4, 8)),
    "rkd_angle": (rkd_angle_loss, (4, 6), (4, 8)),
    "similarity_preserving": (similarity_preserving_loss, (4, 6), (4, 8)),
}


@pytest.mark.parametrize("name", sorted(_EVERY_LOSS))
def test_gradients_reach_only_the_student(name):
    loss, student_shape, teacher_shape = _EVERY_LOSS[name]
    student = _randn(*student_shape, seed=1).requires_grad_()
    teacher = _randn(*teacher_shape, seed=2).requires_grad_()
    value = loss(student, teacher)
    assert value.shape == () and torch.isfinite(value)
    value.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert teacher.grad is None
