"""The pure loss functions, against hand computations of their formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_distill.losses import (
    DIVERGENCES,
    cosine_hidden_loss,
    distillation_loss,
    forward_kl,
    hard_label_loss,
    jsd,
    logit_mse,
    reduce_loss,
    reverse_kl,
    soft_target_loss,
)


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def _softmax_np(z, T):
    e = torch.exp(z.double() / T - (z.double() / T).max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_divergences_are_zero_for_identical_logits(name):
    logits = _logits(4, 5)
    assert torch.allclose(DIVERGENCES[name](logits, logits.clone(), 3.0), torch.zeros(4), atol=1e-6)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_divergences_are_positive_for_different_logits(name):
    assert (DIVERGENCES[name](_logits(4, 5, seed=1), _logits(4, 5, seed=2), 2.0) > 0).all()


def test_forward_kl_matches_hand_computation():
    student, teacher, T = _logits(6, 7, seed=1), _logits(6, 7, seed=2), 2.5
    p_t, p_s = _softmax_np(teacher, T), _softmax_np(student, T)
    expected = (p_t * (p_t.log() - p_s.log())).sum(-1)
    torch.testing.assert_close(forward_kl(student, teacher, T).double(), expected, rtol=1e-5, atol=1e-6)


def test_reverse_kl_matches_hand_computation():
    student, teacher, T = _logits(6, 7, seed=1), _logits(6, 7, seed=2), 1.5
    p_t, p_s = _softmax_np(teacher, T), _softmax_np(student, T)
    expected = (p_s * (p_s.log() - p_t.log())).sum(-1)
    torch.testing.assert_close(reverse_kl(student, teacher, T).double(), expected, rtol=1e-5, atol=1e-6)


def test_jsd_matches_hand_computation_and_is_bounded():
    student, teacher, T, beta = _logits(6, 7, seed=1), _logits(6, 7, seed=2), 1.0, 0.3
    p_t, p_s = _softmax_np(teacher, T), _softmax_np(student, T)
    m = beta * p_t + (1 - beta) * p_s
    expected = beta * (p_t * (p_t / m).log()).sum(-1) + (1 - beta) * (p_s * (p_s / m).log()).sum(-1)
    torch.testing.assert_close(jsd(student, teacher, T, beta=beta).double(), expected, rtol=1e-5, atol=1e-6)
    symmetric = jsd(student * 10, teacher * 10, T, beta=0.5)
    assert (symmetric <= math.log(2) + 1e-6).all()
    torch.testing.assert_close(symmetric, jsd(teacher * 10, student * 10, T, beta=0.5))
    with pytest.raises(ValueError, match="beta"):
        jsd(student, teacher, T, beta=1.0)


def test_logit_mse_with_t_squared_is_independent_of_temperature():
    student, teacher = _logits(4, 5, seed=1), _logits(4, 5, seed=2)
    expected = F.mse_loss(student, teacher)
    for T in (1.0, 2.0, 8.0):
        torch.testing.assert_close(soft_target_loss(student, teacher, T, "mse"), expected)
    torch.testing.assert_close(logit_mse(student, teacher, 2.0), ((student - teacher) / 2).pow(2).mean(-1))


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_soft_target_loss_is_t_squared_times_batchmean_divergence(name):
    student, teacher, T = _logits(8, 5, seed=3), _logits(8, 5, seed=4), 4.0
    expected = DIVERGENCES[name](student, teacher, T).mean() * T**2
    torch.testing.assert_close(soft_target_loss(student, teacher, T, name), expected)


def test_soft_target_loss_matches_torch_kl_div_batchmean():
    student, teacher, T = _logits(8, 5, seed=3), _logits(8, 5, seed=4), 3.0
    expected = F.kl_div(F.log_softmax(student / T, -1), F.softmax(teacher / T, -1), reduction="batchmean") * T * T
    torch.testing.assert_close(soft_target_loss(student, teacher, T), expected)


def test_masked_positions_do_not_count():
    student, teacher = _logits(2, 6, 5, seed=5), _logits(2, 6, 5, seed=6)
    labels = torch.randint(0, 5, (2, 6))
    labels[0, 4:] = -100
    labels[1, :2] = -100
    mask = labels != -100
    changed_student, changed_teacher = student.clone(), teacher.clone()
    changed_student[~mask] = 100.0
    changed_teacher[~mask] = -50.0
    for fn in (
        lambda s, t: soft_target_loss(s, t, 2.0, mask=mask),
        lambda s, t: hard_label_loss(s, labels),
        lambda s, t: distillation_loss(s, t, labels, alpha=0.4, temperature=2.0),
    ):
        torch.testing.assert_close(fn(student, teacher), fn(changed_student, changed_teacher))
    # The mean is over the 8 counted positions, not all 12.
    per_position = forward_kl(student, teacher, 2.0) * 4.0
    torch.testing.assert_close(soft_target_loss(student, teacher, 2.0, mask=mask), per_position[mask].sum() / 8)


def test_hard_label_loss_equals_cross_entropy():
    student, labels = _logits(2, 6, 5, seed=7), torch.randint(0, 5, (2, 6))
    labels[1, 3:] = -100
    expected = F.cross_entropy(student.reshape(-1, 5), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(hard_label_loss(student, labels), expected)
    torch.testing.assert_close(hard_label_loss(student, labels, "sum"), expected * (labels != -100).sum())


def test_distillation_loss_matches_the_formula():
    student, teacher, labels = _logits(16, 10, seed=8), _logits(16, 10, seed=9), torch.randint(0, 10, (16,))
    alpha, T = 0.7, 4.0
    p_t, p_s = _softmax_np(teacher, T), _softmax_np(student, T)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    ce = -torch.log_softmax(student.double(), -1)[torch.arange(16), labels].mean()
    expected = alpha * T**2 * kl + (1 - alpha) * ce
    torch.testing.assert_close(
        distillation_loss(student, teacher, labels, alpha, T).double(), expected, rtol=1e-5, atol=1e-6
    )


def test_alpha_extremes():
    student, teacher, labels = _logits(8, 4, seed=1), _logits(8, 4, seed=2), torch.randint(0, 4, (8,))
    torch.testing.assert_close(
        distillation_loss(student, teacher, labels, alpha=0.0), F.cross_entropy(student, labels)
    )
    torch.testing.assert_close(
        distillation_loss(student, teacher, None, alpha=1.0, temperature=2.0), soft_target_loss(student, teacher, 2.0)
    )
    with pytest.raises(ValueError, match="labels are required"):
        distillation_loss(student, teacher, None, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(student, teacher, labels, alpha=1.5)


def test_gradients_reach_only_the_student():
    student = _logits(8, 4, seed=1).requires_grad_()
    teacher = _logits(8, 4, seed=2).requires_grad_()
    distillation_loss(student, teacher, torch.randint(0, 4, (8,)), alpha=0.5, temperature=3.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 10\).*\(4, 12\)"):
        soft_target_loss(_logits(4, 12), _logits(4, 10))
    with pytest.raises(ValueError, match="labels of shape"):
        hard_label_loss(_logits(4, 12), torch.zeros(5, dtype=torch.long))


def test_unknown_divergence_lists_the_valid_ones():
    with pytest.raises(ValueError, match="forward_kl"):
        soft_target_loss(_logits(2, 3), _logits(2, 3), 1.0, "kl_forward")


def test_cosine_hidden_loss():
    hidden = _logits(2, 5, 8)
    torch.testing.assert_close(cosine_hidden_loss(hidden, hidden * 3), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(cosine_hidden_loss(hidden, -hidden), torch.tensor(2.0))
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]).bool()
    other = _logits(2, 5, 8, seed=3)
    expected = (1 - F.cosine_similarity(hidden, other, dim=-1))[mask].mean()
    torch.testing.assert_close(cosine_hidden_loss(hidden, other, mask), expected)


def test_reduce_loss():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[True, False], [True, True]])
    assert reduce_loss(values, mask, "sum").item() == 8.0
    assert reduce_loss(values, mask, "mean").item() == pytest.approx(8 / 3)
    assert reduce_loss(values, None, "mean").item() == 2.5
    assert reduce_loss(values, mask, "none").tolist() == [[1.0, 0.0], [3.0, 4.0]]
