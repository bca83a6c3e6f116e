r"""The soft-target loss against a teacher known only by its top-k log-probabilities, as offline caches store it.

Shapes: student logits are `(..., V)`; the teacher is given by `values` and `indices` `(..., k)`, the log-probabilities
at temperature 1 of its k most likely classes and their class ids (see :func:`teacher_topk`); the mask is `(...)`.

A cache of a large-vocabulary teacher cannot keep its `(N, V)` logits (V = 32k to 256k classes per token), only its
top-k, K. Of the other classes it knows one number, their total mass :math:`m_t = 1 - \sum_{i \in K} p_t(i)`. What the
loss does with them is `tail`:

- `"renormalize"`: teacher and student are both renormalised over K and the divergence is taken on that support; the
  student is not penalised for the mass it puts elsewhere.
- `"bucket"`: the classes outside K form one more outcome, whose probability is :math:`m_t` for the teacher and the
  student's mass there, :math:`m_s = 1 - \sum_{i \in K} p_s(i)`, for the student. At T = 1 the loss is the divergence
  over these k + 1 outcomes: the student is pulled towards the teacher's tail mass, and told nothing of its shape.

With k = V both equal the divergence of the full logits.

References:
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015. https://arxiv.org/abs/1503.02531
    Anshumann et al. "Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs", 2025 (top-k caches give a
        biased teacher). https://arxiv.org/abs/2503.16870
"""

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked import checked_chunk_size, chunked_per_position_loss
from .chunked_kl import TopKBucketKLKernel
from .chunks import hand_derived_chunks
from .divergences import get_divergence, log1mexp
from .reduction import Reduction, reduce_loss

Tail = Literal["renormalize", "bucket"]
_TOPK_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def teacher_topk(teacher_logits: Tensor, k: int, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    r"""The teacher's k most likely classes per position, as a cache stores them.

    Args:
        teacher_logits: `(..., V)`.
        k: number of classes kept, 1 <= k <= V.
        dtype: the dtype the log-probabilities are stored in (e.g. `torch.float16`); float32 if `None`.

    Returns:
        `(values, indices)`, both `(..., k)`: the log-probabilities :math:`\log \mathrm{softmax}(z_t)` at temperature
        1, in decreasing order and detached, and their class ids (int64).
    """
    if not 1 <= k <= teacher_logits.shape[-1]:
        raise ValueError(f"k must be in [1, {teacher_logits.shape[-1]}] (the number of classes), got {k}.")
    values, indices = F.log_softmax(teacher_logits.detach().float(), dim=-1).topk(k, dim=-1)
    return (values if dtype is None else values.to(dtype)), indices


def _bucket_teacher(student_logits: Tensor, values: Tensor, indices: Tensor) -> Tensor:
    r"""The teacher's log-probabilities `(..., V)` at T = 1, completed outside its top-k K by the student's tail shape.

    .. math:: \hat p_t(j) = p_t(j) \text{ for } j \in K, \qquad \hat p_t(j) = m_t \, \frac{p_s(j)}{m_s}
        \text{ for } j \notin K

    with both tail masses computed without cancellation: :math:`\log m_s` as the logsumexp of the student's
    log-probabilities outside K, :math:`\log m_t = \log(1 - \exp(\mathrm{logsumexp}_K v))` with `log1mexp`. An empty
    teacher tail (k = V, or a top-k holding all the mass up to rounding) is `-inf`, outside the support. Detached.
    """
    student_log_probs = F.log_softmax(student_logits.detach().float(), dim=-1)  # (..., V)
    if indices.shape[-1] == student_logits.shape[-1]:
        return torch.empty_like(student_log_probs).scatter_(-1, indices, values)
    student_rest = student_log_probs.scatter(-1, indices, -math.inf).logsumexp(-1, keepdim=True)  # log m_s, (..., 1)
    teacher_rest = log1mexp(values.logsumexp(-1, keepdim=True))  # log m_t, (..., 1)
    # Where the student has no mass (-inf), neither has the completed teacher, even if log m_t - log m_s is +inf.
    tail = torch.where(torch.isneginf(student_log_probs), -math.inf, student_log_probs + (teacher_rest - student_rest))
    return tail.scatter_(-1, indices, values)


def topk_soft_target_loss(
    student_logits: Tensor,
    teacher_topk_values: Tensor,
    teacher_topk_indices: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
    tail: Tail = "bucket",
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
) -> Tensor:
    r"""Soft-target loss :math:`T^2 \, D(p_t^T, p_s^T)` of :func:`~hf_distill.losses.soft_target_loss`, with the
    teacher given by its top-k log-probabilities at temperature 1 (:func:`teacher_topk`).

    The stored values are the logits less one constant per position, :math:`v_i = z_i - \log Z`, so
    :math:`\mathrm{softmax}(v / T)` over any set of classes is :math:`\mathrm{softmax}(z / T)` over that set: the
    tempered teacher restricted to K and renormalised is exact at every T,

    .. math:: p_t^T(i \mid K) = \frac{e^{v_i / T}}{\sum_{j \in K} e^{v_j / T}}, \qquad i \in K,

    and `tail="renormalize"` takes the divergence between it and the student's :math:`p_s^T(i \mid K)`.

    What a temperature does to the mass outside K depends on how it is spread, which the cache does not hold.
    `tail="bucket"` completes the teacher there with the student's own tail shape, scaled to the teacher's tail mass,
    :math:`\hat p_t(j) = m_t \, p_s(j) / m_s` for :math:`j \notin K` (a constant target: no gradient flows through
    it), and takes the divergence of the full tempered distributions, :math:`D(\hat p_t^T, p_s^T)`. At T = 1 this is
    exactly the divergence over the k + 1 outcomes "each class of K" and "any other class", with masses
    :math:`m_t` and :math:`m_s` for the last one, in value and gradient (for any of the divergences, since
    :math:`\hat p_t / p_s` is constant outside K). At T != 1 it assumes the teacher's tail is shaped like the
    student's; tempering the k + 1 outcomes instead, as if "any other class" were one class, gives far less tempered
    mass to the tail at T > 1 and a much worse gradient (`benchmarks/topk_error.py` measures both against the full
    loss).
    Either way the loss is 0 when the student's logits equal the teacher's. Classes outside K are taken to be in the
    teacher's support.

    Args:
        student_logits: `(..., V)` student logits.
        teacher_topk_values: `(..., k)` the teacher's log-probabilities at T = 1 (any float dtype), detached here.
        teacher_topk_indices: `(..., k)` their class ids, distinct along the last dimension.
        temperature: T > 0.
        mask: optional boolean `(...)`, true where the position counts (e.g. `labels != -100`).
        reduction: `"mean"` over counted positions, `"sum"`, or `"none"` for `(...)`.
        tail: `"bucket"` or `"renormalize"`.
        divergence: `"forward_kl"`, `"reverse_kl"` or `"jsd"` (logit MSE needs logits, which the cache does not keep).
        jsd_beta: mixture weight for `divergence="jsd"`.

    Returns:
        A scalar, or `(...)` for `reduction="none"`, in float32; scaled by T².
    """
    per_position_fn = _topk_per_position_fn(
        student_logits, teacher_topk_values, teacher_topk_indices, temperature, tail, divergence, jsd_beta
    )
    per_position = per_position_fn(student_logits, teacher_topk_values.detach(), teacher_topk_indices)
    return reduce_loss(per_position, mask, reduction)


def chunked_topk_soft_target_loss(
    student_logits: Tensor,
    teacher_topk_values: Tensor,
    teacher_topk_indices: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
    tail: Tail = "bucket",
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
    chunk_size: int | None = None,
) -> Tensor:
    """:func:`topk_soft_target_loss` computed `chunk_size` positions at a time, as
    :func:`~hf_distill.losses.chunked_soft_target_loss` computes the full one: the same values and gradients, and
    beyond the student's gradient a few tensors of `chunk_size x V` instead of several of the logits' size (the
    `"bucket"` tail completes the teacher over all V classes)."""
    per_position_fn = _topk_per_position_fn(
        student_logits, teacher_topk_values, teacher_topk_indices, temperature, tail, divergence, jsd_beta
    )
    teachers = [teacher_topk_values, teacher_topk_indices]
    if tail != "bucket" or divergence != "forward_kl":
        return chunked_per_position_loss(per_position_fn, student_logits, teachers, mask, reduction, chunk_size)
    chunk_size = checked_chunk_size(student_logits, mask, reduction, chunk_size)
    kernel = TopKBucketKLKernel(temperature, per_position_fn)
    values = hand_derived_chunks(student_logits, kernel, chunk_size, mask, *(t.detach() for t in teachers))
    return reduce_loss(values, mask, reduction)


def _topk_per_position_fn(
    student_logits: Tensor,
    values: Tensor,
    indices: Tensor,
    temperature: float,
    tail: str,
    divergence: str,
    jsd_beta: float,
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """Check the arguments of :func:`topk_soft_target_loss`; return its loss per position
    `fn(student (..., V), values (..., k), indices (..., k)) -> (...)`."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if tail not in ("renormalize", "bucket"):
        raise ValueError(f"tail must be 'renormalize' or 'bucket', got {tail!r}.")
    if divergence not in _TOPK_DIVERGENCES:
        raise ValueError(f"Unknown top-k distillation loss {divergence!r}; choose one of {list(_TOPK_DIVERGENCES)}.")
    if values.shape != indices.shape:
        raise ValueError(
            f"teacher top-k values of shape {tuple(values.shape)} and indices of shape {tuple(indices.shape)} must "
            "match."
        )
    k, num_classes = indices.shape[-1], student_logits.shape[-1]
    if indices.shape[:-1] != student_logits.shape[:-1] or not 1 <= k <= num_classes:
        raise ValueError(
            f"teacher top-k of shape {tuple(indices.shape)} do not fit student logits of shape "
            f"{tuple(student_logits.shape)}: expected {tuple(student_logits.shape[:-1])} + (k,) with 1 <= k <= "
            f"{num_classes}."
        )
    divergence_fn = get_divergence(divergence, jsd_beta)

    def per_position(student: Tensor, values: Tensor, indices: Tensor) -> Tensor:
        indices, values = indices.long(), values.float()
        if tail == "renormalize":
            student, teacher = student.gather(-1, indices), values  # (..., k)
        else:
            student, teacher = student, _bucket_teacher(student, values, indices)  # (..., V)
        return divergence_fn(student, teacher, temperature) * temperature**2

    return per_position
