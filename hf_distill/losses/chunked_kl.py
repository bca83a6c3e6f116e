r"""The forward KL divergence over chunks of positions with its gradient derived by hand, for large vocabularies.

Shapes: logits are `(N, V)` rows of positions (views of `(..., V)` logits, see
:func:`hf_distill.losses.chunks.aligned_chunks`); values are `(N,)`.

Hinton's soft loss at temperature T, per position, with :math:`a = (z_t - \max z_t) / T` and
:math:`b = (z_s - \max z_s) / T` (the tempered logits shifted by their maximum) and :math:`Z_t = \sum e^{a}`,
:math:`Z_s = \sum e^{b}`:

.. math:: T^2 \, \mathrm{KL}(p_t^T \| p_s^T) = T^2 \Big[ \frac{1}{Z_t} \sum_c e^{a_c} (a_c - b_c)
    - \log Z_t + \log Z_s \Big], \qquad \frac{\partial}{\partial z_s} = T \, (p_s^T - p_t^T)

Autograd through `log_softmax` and `kl_div` makes about twenty passes over the logits and allocates each of their
results; on a CPU, where a fresh tensor of 8 MiB costs more to fault in than to compute, that is most of the time.
Here the forward pass takes two exponentials per element into three reused `chunk x V` float32 buffers and keeps
two numbers per position, :math:`\max z_s` and :math:`\log Z_s` (and the teacher's), from which the backward pass
rebuilds both distributions with two more exponentials, writing the gradient in place: 2 to 3 times faster than
autograd (`benchmarks/loss_memory.py`), with values equal to :func:`hf_distill.losses.forward_kl`'s up to float32
rounding. Chunks with teacher logits of `-inf` (outside the support) take the autograd path of
:func:`hf_distill.losses.chunked.chunked_per_position_loss`, which renormalises the student over the support.
"""

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .chunks import PerPositionFn, aligned_chunks, differentiate_chunk


def _tempered_probs(logits: Tensor, maximum: Tensor, log_z: Tensor, temperature: float, out: Tensor) -> Tensor:
    """Write :math:`\\mathrm{softmax}(z / T)` `(n, V)` into `out`, from the `max z` and `log Z` `(n,)` of
    :func:`forward_kl_chunk`."""
    torch.sub(logits, maximum.unsqueeze(-1), out=out)
    if temperature != 1.0:
        out.div_(temperature)
    return out.sub_(log_z.unsqueeze(-1)).exp_()


def forward_kl_chunk(
    student: Tensor, teacher: Tensor, temperature: float, buffers: list[Tensor]
) -> tuple[Tensor, Tensor]:
    r"""Values :math:`T^2 \, \mathrm{KL}(p_t^T \| p_s^T)` `(n,)` of `n` positions, and the statistics `(4, n)`
    (the student's and the teacher's max and log Z) from which :func:`forward_kl_chunk_gradient` rebuilds the
    gradient.

    Args:
        student, teacher: `(n, V)` logits of any float dtype, without `-inf`.
        temperature: T > 0.
        buffers: three float32 tensors of at least `(n, V)`, overwritten.
    """
    shifted_student, shifted_teacher, difference = (buffer[: student.shape[0]] for buffer in buffers)
    student_max, teacher_max = student.amax(-1).float(), teacher.amax(-1).float()
    torch.sub(student, student_max.unsqueeze(-1), out=shifted_student)
    torch.sub(teacher, teacher_max.unsqueeze(-1), out=shifted_teacher)
    if temperature != 1.0:
        shifted_student.div_(temperature)
        shifted_teacher.div_(temperature)
    # a - b before exponentiating: the max-shifted logits keep it free of any constant offset of the logits.
    torch.sub(shifted_teacher, shifted_student, out=difference)
    student_z, teacher_z = shifted_student.exp_().sum(-1), shifted_teacher.exp_().sum(-1)
    cross = torch.linalg.vecdot(shifted_teacher, difference) / teacher_z  # sum_c p_t (a - b)
    student_log_z, teacher_log_z = student_z.log_(), teacher_z.log_()
    values = (cross - teacher_log_z + student_log_z) * temperature**2
    return values, torch.stack([student_max, student_log_z, teacher_max, teacher_log_z])


def forward_kl_chunk_gradient(
    student: Tensor,
    teacher: Tensor,
    statistics: Tensor,
    weights: Tensor,
    temperature: float,
    out: Tensor,
    buffers: list[Tensor],
) -> None:
    r"""Write :math:`w \, T \, (p_s^T - p_t^T)` `(n, V)`, the gradient of `sum(weights * values)` w.r.t. the
    student's logits, into `out` (any float dtype).

    Args:
        student, teacher: the `(n, V)` logits given to :func:`forward_kl_chunk`, and `statistics` `(4, n)` it returned.
        weights: `(n,)`.
        temperature: T > 0.
        out: `(n, V)`, the chunk of the student's gradient.
        buffers: two float32 tensors of at least `(n, V)`, overwritten.
    """
    student_max, student_log_z, teacher_max, teacher_log_z = statistics
    n = student.shape[0]
    student_probs = out if out.dtype == torch.float32 else buffers[1][:n]
    _tempered_probs(student, student_max, student_log_z, temperature, student_probs)
    teacher_probs = _tempered_probs(teacher, teacher_max, teacher_log_z, temperature, buffers[0][:n])
    student_probs.sub_(teacher_probs).mul_((weights * temperature).unsqueeze(-1))
    if student_probs is not out:
        out.copy_(student_probs)


class ForwardKLChunks(torch.autograd.Function):
    """`T² KL(p_t^T || p_s^T)` per position `(...)`, chunk by chunk, with the gradient of
    :mod:`hf_distill.losses.chunked_kl`; the backward pass rebuilds each chunk's distributions from the four numbers
    per position the forward pass kept.

    Chunks lying wholly outside `mask` are skipped (values and gradient 0); chunks whose teacher has `-inf` logits
    take `per_position_fn` (:func:`~hf_distill.losses.forward_kl`) and autograd, which renormalise the student over
    the teacher's support.
    """

    @staticmethod
    def forward(
        ctx,
        student_logits: Tensor,
        teacher_logits: Tensor,
        temperature: float,
        chunk_size: int,
        mask: Tensor | None,
        per_position_fn: PerPositionFn,
    ) -> Tensor:
        positions, num_classes = student_logits.shape[:-1].numel(), student_logits.shape[-1]
        values = torch.zeros(positions, dtype=torch.float32, device=student_logits.device)
        statistics = torch.zeros(4, positions, dtype=torch.float32, device=student_logits.device)
        counted = None if mask is None else mask.reshape(-1).bool().cpu()
        buffers = [
            student_logits.new_empty(min(chunk_size, positions), num_classes, dtype=torch.float32) for _ in "abc"
        ]
        by_autograd = []  # (start, stop) of the chunks whose teacher has -inf logits
        for start, stop, (student, teacher) in aligned_chunks([student_logits, teacher_logits], chunk_size):
            if counted is not None and not counted[start:stop].any():
                continue
            if torch.isneginf(teacher.amin(-1)).any():  # a row minimum: 3 times cheaper than isneginf(teacher)
                by_autograd.append((start, stop))
                values[start:stop] = per_position_fn(student, teacher)
            else:
                values[start:stop], statistics[:, start:stop] = forward_kl_chunk(
                    student, teacher, temperature, buffers
                )
        ctx.save_for_backward(student_logits, teacher_logits, statistics)
        ctx.temperature, ctx.chunk_size, ctx.counted = temperature, chunk_size, counted
        ctx.per_position_fn, ctx.by_autograd = per_position_fn, set(by_autograd)
        return values.view(student_logits.shape[:-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None,) * 6
        student_logits, teacher_logits, statistics = ctx.saved_tensors
        gradient = torch.empty_like(student_logits, memory_format=torch.contiguous_format)
        weights = grad_values.reshape(-1).float()
        rows = min(ctx.chunk_size, weights.numel())
        buffers = [student_logits.new_empty(rows, student_logits.shape[-1], dtype=torch.float32) for _ in "ab"]
        for start, stop, (student, teacher, chunk_gradient) in aligned_chunks(
            [student_logits, teacher_logits, gradient], ctx.chunk_size
        ):
            if ctx.counted is not None and not ctx.counted[start:stop].any():
                chunk_gradient.zero_()
            elif (start, stop) in ctx.by_autograd:
                chunk_weights = weights[start:stop]
                chunk_gradient.copy_(differentiate_chunk(ctx.per_position_fn, student, [teacher], chunk_weights)[1])
            else:
                chunk_statistics, chunk_weights = statistics[:, start:stop], weights[start:stop]
                forward_kl_chunk_gradient(
                    student, teacher, chunk_statistics, chunk_weights, ctx.temperature, chunk_gradient, buffers
                )
        return gradient, None, None, None, None, None
