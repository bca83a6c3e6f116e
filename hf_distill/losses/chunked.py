"""The soft-target loss computed over chunks of positions, for large vocabularies: same values and gradients as
:func:`hf_distill.losses.soft_target_loss`, a fraction of its peak memory.

Shapes: logits are `(..., V)`, e.g. `(B, L, V)` for token-level distillation; the mask is `(...)`.

Memory: beyond its inputs and the student's gradient, :func:`soft_target_loss` keeps two float32 copies of the logits
for its backward pass (the log-probabilities) and peaks at four (eleven for JSD). Here each chunk of `chunk_size`
positions is differentiated on its own and its gradient written into the student's gradient, so that beyond that
gradient only a few float32 tensors of `chunk_size x V` are alive at once: 6 for the reverse KL and MSE, 13 for
JSD, i.e. 0.19 and 0.41 of one float32 logits tensor with the default chunk size (`benchmarks/loss_memory.py`). The
forward KL, whose gradient :mod:`hf_distill.losses.chunked_kl` derives by hand, needs 3 (0.06 of a logits tensor).
"""

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .chunked_kl import ForwardKLKernel
from .chunks import PerPositionFn, aligned_chunks, default_chunk_size, differentiate_chunk, hand_derived_chunks
from .divergences import get_divergence
from .reduction import Reduction, check_logit_shapes, reduce_loss


def chunked_soft_target_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    divergence: str = "forward_kl",
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
    jsd_beta: float = 0.5,
    chunk_size: int | None = None,
    teacher_max: Tensor | None = None,
) -> Tensor:
    r"""Soft-target loss :math:`T^2 \, D(p_t^T, p_s^T)` of :func:`~hf_distill.losses.soft_target_loss`, computed
    `chunk_size` positions at a time.

    Values and gradients are those of :func:`soft_target_loss` with the same arguments (every divergence of
    :data:`DIVERGENCES`, teacher logits of `-inf` outside the support, the T² scaling, a detached teacher,
    half-precision logits computed in float32); only memory and time differ. With `"mean"` or `"sum"`, the forward
    pass differentiates each chunk as it goes (when the student requires grad and grad mode is on) and keeps the
    student's gradient, which the backward pass only scales: the pair does the work of :func:`soft_target_loss`. With
    `"none"`, whose weights are only known in the backward pass, the backward pass recomputes each chunk, which costs
    one more forward pass. `"forward_kl"`, the default, computes its gradient by hand instead, for every
    reduction (:mod:`hf_distill.losses.chunked_kl`, faster).

    Args:
        student_logits: `(..., V)` student logits; may be a non-contiguous view such as the shifted `logits[:, :-1]`
            of a causal LM, which is not copied.
        teacher_logits: `(..., V)` teacher logits, same shape.
        temperature: T > 0.
        divergence: a name from :data:`DIVERGENCES`.
        mask: optional boolean `(...)`, true where the position counts (e.g. `labels != -100`).
        reduction: `"mean"` over counted positions, `"sum"`, or `"none"` for `(...)`.
        jsd_beta: mixture weight for `divergence="jsd"`.
        chunk_size: positions per chunk. `None` takes 1/32 of the positions, and at most 2²¹ / V of them (8 MiB
            per float32 chunk tensor), which bounds the extra memory to 0.2 to 0.4 float32 logits tensors, and to 50
            to 110 MiB for large inputs.
        teacher_max: optional `(...)`, the teacher's maximum logit per position where it is known (see
            :func:`hf_distill.validation.check_teacher_logits`), which the forward KL then does not compute again.

    Returns:
        A scalar, or `(...)` for `reduction="none"`, in float32.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    check_logit_shapes(student_logits, teacher_logits)
    divergence_fn = get_divergence(divergence, jsd_beta)

    def per_position_fn(student: Tensor, teacher: Tensor, *known_max: Tensor) -> Tensor:
        return divergence_fn(student, teacher, temperature) * temperature**2

    if divergence != "forward_kl":
        return chunked_per_position_loss(
            per_position_fn, student_logits, [teacher_logits], mask, reduction, chunk_size
        )
    chunk_size = checked_chunk_size(student_logits, mask, reduction, chunk_size)
    kernel = ForwardKLKernel(temperature, per_position_fn)
    teachers = [teacher_logits.detach(), *known_teacher_max(student_logits, teacher_max)]
    values = hand_derived_chunks(student_logits, kernel, chunk_size, mask, *teachers)
    return reduce_loss(values, mask, reduction)


def known_teacher_max(student_logits: Tensor, teacher_max: Tensor | None) -> list[Tensor]:
    """`[teacher_max (..., 1)]` for the forward KL's kernel, or `[]`; an error if it is not one number per position
    of the `(..., V)` logits."""
    if teacher_max is None:
        return []
    if teacher_max.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"teacher_max of shape {tuple(teacher_max.shape)} must hold one number per position of logits of shape "
            f"{tuple(student_logits.shape)}."
        )
    return [teacher_max.detach().unsqueeze(-1)]


def chunked_per_position_loss(
    per_position_fn: PerPositionFn,
    student_logits: Tensor,
    teachers: list[Tensor],
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """A loss `per_position_fn(student, *teachers)` `(...)` on `(..., V)` student logits, reduced, `chunk_size`
    positions at a time (see :func:`chunked_soft_target_loss`, which it computes for the full teacher logits).

    Args:
        per_position_fn: maps a chunk `(n, V)` of the student's logits and the same n positions of each teacher
            tensor `(n, W)` to the values `(n,)`; differentiable in the student's logits.
        student_logits: `(..., V)`.
        teachers: tensors `(..., W)` (any last dimension) over the same positions, detached here.
        mask, reduction, chunk_size: as in :func:`chunked_soft_target_loss`.
    """
    chunk_size = checked_chunk_size(student_logits, mask, reduction, chunk_size)
    leading_shape = student_logits.shape[:-1]
    teachers = [teacher.detach() for teacher in teachers]
    if reduction == "none":
        per_position = _RecomputedDivergence.apply(student_logits, per_position_fn, chunk_size, mask, *teachers)
        return reduce_loss(per_position, mask, reduction)
    # d loss / d per-position value, as `reduce_loss` differentiates it: 1 / count (mean) or 1 (sum) where counted.
    weights = torch.ones(leading_shape, dtype=torch.float32, device=student_logits.device)
    if mask is not None:
        weights = weights.masked_fill(~mask.bool(), 0.0)
    if reduction == "mean":
        weights = weights / max(weights.numel() if mask is None else int(mask.sum()), 1)
    with_gradient = torch.is_grad_enabled() and student_logits.requires_grad
    return _ReducedDivergence.apply(
        student_logits, per_position_fn, chunk_size, mask, reduction, weights, with_gradient, *teachers
    )


def checked_chunk_size(
    student_logits: Tensor, mask: Tensor | None, reduction: Reduction, chunk_size: int | None
) -> int:
    """Check the mask, reduction and chunk size of a chunked loss; return the number of positions per chunk."""
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}.")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    leading_shape = student_logits.shape[:-1]
    if mask is not None and mask.shape != leading_shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match loss shape {tuple(leading_shape)}.")
    return default_chunk_size(student_logits) if chunk_size is None else chunk_size


def _recompute_gradient(
    per_position_fn: PerPositionFn, student_logits: Tensor, teachers: list[Tensor], chunk_size: int, weights: Tensor
) -> Tensor:
    """The gradient of `sum(weights * values)` w.r.t. the student's logits, recomputing each chunk's values."""
    # The student's own gradient: the only tensor of the logits' size allocated here.
    gradient = torch.empty(student_logits.shape, dtype=student_logits.dtype, device=student_logits.device)
    weights = weights.reshape(-1)
    # On the host, so that choosing the chunks to skip synchronises with the device once, not once per chunk.
    counted = (weights != 0).cpu()
    for start, stop, (student, chunk_gradient, *teacher) in aligned_chunks(
        [student_logits, gradient, *teachers], chunk_size
    ):
        if counted[start:stop].any():
            chunk_gradient.copy_(differentiate_chunk(per_position_fn, student, teacher, weights[start:stop])[1])
        else:
            chunk_gradient.zero_()
    return gradient


class _RecomputedDivergence(torch.autograd.Function):
    """Per-position values `(...)`, computed chunk by chunk; the backward pass recomputes each chunk.

    Chunks lying wholly outside `mask` are skipped: their values (discarded by the reduction) are 0.
    """

    @staticmethod
    def forward(
        ctx,
        student_logits: Tensor,
        per_position_fn: PerPositionFn,
        chunk_size: int,
        mask: Tensor | None,
        *teachers: Tensor,
    ) -> Tensor:
        values = torch.zeros(student_logits.shape[:-1].numel(), dtype=torch.float32, device=student_logits.device)
        counted = None if mask is None else mask.reshape(-1).bool().cpu()
        for start, stop, (student, *teacher) in aligned_chunks([student_logits, *teachers], chunk_size):
            if counted is None or counted[start:stop].any():
                values[start:stop] = per_position_fn(student, *teacher)
        ctx.save_for_backward(student_logits, *teachers)
        ctx.per_position_fn, ctx.chunk_size = per_position_fn, chunk_size
        return values.view(student_logits.shape[:-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values: Tensor) -> tuple[Tensor | None, ...]:
        nones = (None,) * (len(ctx.saved_tensors) + 2)  # the function, chunk size, mask and teachers get none
        if not ctx.needs_input_grad[0]:
            return None, *nones
        student_logits, *teachers = ctx.saved_tensors
        gradient = _recompute_gradient(ctx.per_position_fn, student_logits, teachers, ctx.chunk_size, grad_values)
        return gradient, *nones


class _ReducedDivergence(torch.autograd.Function):
    """The reduced loss; with `with_gradient`, the forward pass also computes the student's gradient of the loss.

    `weights` `(...)` is the derivative of the loss w.r.t. the per-position values; chunks where it is 0 are skipped.
    The backward pass hands out the kept gradient, scaled in place by the incoming one; a second backward pass through
    a retained graph recomputes it, since the first one's tensor now belongs to autograd.
    """

    @staticmethod
    def forward(
        ctx,
        student_logits: Tensor,
        per_position_fn: PerPositionFn,
        chunk_size: int,
        mask: Tensor | None,
        reduction: Reduction,
        weights: Tensor,
        with_gradient: bool,
        *teachers: Tensor,
    ) -> Tensor:
        flat_weights = weights.reshape(-1)
        counted = (flat_weights != 0).cpu()
        values = torch.zeros(flat_weights.shape, dtype=torch.float32, device=student_logits.device)
        tensors, gradient = [student_logits, *teachers], None
        if with_gradient:
            gradient = torch.empty(student_logits.shape, dtype=student_logits.dtype, device=student_logits.device)
            tensors.append(gradient)
        for start, stop, (student, *rest) in aligned_chunks(tensors, chunk_size):
            teacher, chunk_gradient = rest[: len(teachers)], rest[len(teachers) :]
            if not counted[start:stop].any():
                if with_gradient:
                    chunk_gradient[0].zero_()
            elif with_gradient:
                values[start:stop], grad = differentiate_chunk(
                    per_position_fn, student, teacher, flat_weights[start:stop]
                )
                chunk_gradient[0].copy_(grad)
            else:
                values[start:stop] = per_position_fn(student, *teacher)
        ctx.save_for_backward(student_logits, weights, *teachers)
        ctx.per_position_fn, ctx.chunk_size, ctx.gradient = per_position_fn, chunk_size, gradient
        return reduce_loss(values.view(weights.shape), mask, reduction)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        nones = (None,) * (len(ctx.saved_tensors) + 4)  # the function, chunk size, mask, reduction, flag, teachers
        if not ctx.needs_input_grad[0]:
            return None, *nones
        gradient, ctx.gradient = ctx.gradient, None
        if gradient is None:
            student_logits, weights, *teachers = ctx.saved_tensors
            weights = weights * grad_loss
            gradient = _recompute_gradient(ctx.per_position_fn, student_logits, teachers, ctx.chunk_size, weights)
            return gradient, *nones
        return gradient.mul_(grad_loss), *nones
