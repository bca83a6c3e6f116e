"""Chunks of positions of `(..., V)` logits, shared by the chunked losses, and the autograd function of those whose
gradient is derived by hand (:mod:`.chunked_kl`, :mod:`.chunked_ce`)."""

import math
from collections.abc import Callable, Iterator
from typing import Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# `per_position_fn(student_chunk, *teacher_chunks)` → the values `(n,)` of a chunk of n positions.
PerPositionFn = Callable[..., Tensor]

# `chunk_size=None` splits the positions into this many chunks at least...
_MIN_CHUNKS = 32
# ...of at most this many elements (8 MiB in float32) each, however many positions there are.
_MAX_CHUNK_ELEMENTS = 2**21


def default_chunk_size(logits: Tensor) -> int:
    """Positions per chunk of `(..., V)` logits when none is given: 1/32 of them, and at most 2²¹ / V (8 MiB per
    float32 chunk tensor)."""
    chunk_size = math.ceil(logits.shape[:-1].numel() / _MIN_CHUNKS)
    return max(1, min(chunk_size, _MAX_CHUNK_ELEMENTS // max(logits.shape[-1], 1)))


def aligned_chunks(tensors: list[Tensor], chunk_size: int, offset: int = 0) -> Iterator[tuple[int, int, list[Tensor]]]:
    """Yield `(start, stop, rows)`: views `(stop - start, W)` of each `(..., W)` tensor (W its own) over the same
    positions `start:stop` (in row-major order), without copying.

    Tensors whose positions cannot be flattened into one view (e.g. `logits[:, :-1]`) are split along their first
    dimension first; chunks then stop at the end of each slice.
    """
    try:
        rows = [tensor.view(-1, tensor.shape[-1]) for tensor in tensors]
    except RuntimeError:
        positions_per_slice = tensors[0].shape[1:-1].numel()
        for i in range(tensors[0].shape[0]):
            yield from aligned_chunks([tensor[i] for tensor in tensors], chunk_size, offset + i * positions_per_slice)
        return
    for start in range(0, rows[0].shape[0], chunk_size):
        chunk = [row[start : start + chunk_size] for row in rows]
        yield offset + start, offset + start + chunk[0].shape[0], chunk


def differentiate_chunk(
    per_position_fn: PerPositionFn, student: Tensor, teachers: list[Tensor], weights: Tensor
) -> tuple[Tensor, Tensor]:
    """Values `(n,)` of a chunk of `n` positions, and the gradient `(n, V)` of `sum(weights * values)` w.r.t. it."""
    with torch.enable_grad():
        student = student.detach().requires_grad_()
        values = per_position_fn(student, *teachers)
        (gradient,) = torch.autograd.grad(values, student, weights)
    return values.detach(), gradient


def shifted_into(logits: Tensor, maximum: Tensor, temperature: float, out: Tensor) -> Tensor:
    """Write :math:`(z - \\max z) / T` `(n, V)` into `out` (float32) and return it; `maximum` is `(n,)`.

    Where :math:`1 / T` is a power of two (T = 1, 2, 4, ...), in one pass, :math:`z / T - \\max z / T` by `torch.add`
    with `alpha`, which rounds exactly as subtracting and then dividing would (both divisions are exact); at other T
    in those two passes, which keep logits far from 0 as precise as near it.
    """
    if math.frexp(temperature)[0] == 0.5:
        return torch.add((maximum / -temperature).unsqueeze(-1), logits, alpha=1.0 / temperature, out=out)
    return torch.sub(logits, maximum.unsqueeze(-1), out=out).div_(temperature)


def softmax_into(logits: Tensor, maximum: Tensor, log_z: Tensor, temperature: float, out: Tensor) -> Tensor:
    """Write :math:`\\mathrm{softmax}(z / T)` `(n, V)` into `out` (float32) and return it, from `max z` and
    :math:`\\log Z = \\log \\sum e^{(z - \\max z) / T}`, both `(n,)`, as a kernel's forward pass kept them."""
    return shifted_into(logits, maximum, temperature, out).sub_(log_z.unsqueeze(-1)).exp_()


def log_sum_of_squares(rows: Tensor) -> Tensor:
    """:math:`\\log \\sum_c x_c^2` of each row `(n,)` of `(n, V)` rows: twice the log of their norm, one pass that
    reads them and writes nothing (a product then a sum would write a chunk-sized tensor)."""
    return torch.linalg.vector_norm(rows, dim=-1).log_().mul_(2.0)


def row_dot(first: Tensor, second: Tensor, scratch: Tensor) -> Tensor:
    """The dot product of each row `(n,)` of two `(n, V)` float32 tensors, their product written into `scratch`
    (`(n, V)`, which may be one of them): `torch.linalg.vecdot` allocates that product afresh, and on a CPU a fresh
    tensor of a chunk's size costs more to fault in than the product does to compute."""
    return torch.mul(first, second, out=scratch).sum(-1)


class ChunkKernel(Protocol):
    """A loss per position on chunks `(n, V)` of student logits, with its gradient derived by hand.

    `values` computes a chunk's values and the few numbers per position (`statistics`) from which `gradient` rebuilds
    what it needs; both work in `num_buffers` float32 tensors of `(chunk, V)` allocated once per pass. `values` may
    decline a chunk (return `None`), which `reference`, the same loss in differentiable operations, then computes
    with autograd.

    A kernel may compute `num_values` losses per position at once (values `(num_values, n)`, weights likewise), and
    may start its gradient in the forward pass (`gradient_in_forward`): `values` then gets the chunk of the student's
    gradient as `partial` (float32, or `None` when no gradient is wanted) to write what it knows without the weights,
    and `gradient` gets it back as `out` with `kept=True` to finish in place.
    """

    num_buffers: int
    num_statistics: int
    num_values: int
    gradient_in_forward: bool

    def values(
        self, student: Tensor, teachers: list[Tensor], buffers: list[Tensor], partial: Tensor | None = None
    ) -> tuple[Tensor, Tensor] | None:
        """`(values (n,) or (num_values, n), statistics (num_statistics, n))`, or `None` to leave the chunk to
        `reference`."""

    def gradient(
        self,
        student: Tensor,
        teachers: list[Tensor],
        statistics: Tensor,
        weights: Tensor,
        out: Tensor,
        buffers: list[Tensor],
        kept: bool = False,
    ) -> None:
        """Write the gradient `(n, V)` of `sum(weights * values)` w.r.t. `student` into `out` (float32); with
        `kept`, `out` holds what `values` wrote into `partial`."""

    def reference(self, student: Tensor, *teachers: Tensor) -> Tensor:
        """The values `(n,)` or `(num_values, n)`, differentiable in `student`."""


def hand_derived_chunks(
    student_logits: Tensor, kernel: ChunkKernel, chunk_size: int, mask: Tensor | None, *teachers: Tensor
) -> Tensor:
    """:class:`HandDerivedChunks` applied, told whether a gradient will be wanted (grad mode on and a student that
    requires grad: an autograd function's forward pass sees neither)."""
    with_gradient = torch.is_grad_enabled() and student_logits.requires_grad
    return HandDerivedChunks.apply(student_logits, kernel, chunk_size, mask, with_gradient, *teachers)


class HandDerivedChunks(torch.autograd.Function):
    """A `kernel`'s values per position `(...)` (or `(num_values, ...)`) on `(..., V)` student logits and the same
    positions of each teacher tensor `(..., W)`, `chunk_size` positions at a time; the backward pass hands each chunk
    to `kernel.gradient`.

    Chunks lying wholly outside `mask` are skipped (values and gradient 0). Beyond the student's gradient, the
    memory is the kernel's buffers and statistics (and one more buffer, in which the kernels write the gradient of a
    student in half precision before it is cast). A kernel with `gradient_in_forward` gets the student's gradient
    in the forward pass when the student is float32 and `with_gradient` (see :func:`hand_derived_chunks`); the
    backward pass finishes it and hands it out (a second backward pass through a retained graph computes it anew).
    """

    @staticmethod
    def forward(
        ctx,
        student_logits: Tensor,
        kernel: ChunkKernel,
        chunk_size: int,
        mask: Tensor | None,
        with_gradient: bool,
        *teachers: Tensor,
    ) -> Tensor:
        positions, device = student_logits.shape[:-1].numel(), student_logits.device
        num_values = kernel.num_values
        values = torch.zeros(num_values, positions, dtype=torch.float32, device=device)
        statistics = torch.zeros(kernel.num_statistics, positions, dtype=torch.float32, device=device)
        counted = None if mask is None else mask.reshape(-1).bool().cpu()
        buffers = _buffers(student_logits, kernel.num_buffers, chunk_size)
        keeps = kernel.gradient_in_forward and with_gradient and student_logits.dtype == torch.float32
        gradient = torch.empty_like(student_logits, memory_format=torch.contiguous_format) if keeps else None
        by_reference = set()  # (start, stop) of the chunks the kernel declined
        tensors = [student_logits, *teachers, *([gradient] if keeps else [])]
        for start, stop, (student, *rest) in aligned_chunks(tensors, chunk_size):
            teacher, partial = rest[: len(teachers)], rest[len(teachers)] if keeps else None
            if counted is not None and not counted[start:stop].any():
                if partial is not None:
                    partial.zero_()
                continue
            result = kernel.values(student, teacher, buffers, partial)
            if result is None:
                by_reference.add((start, stop))
                values[:, start:stop] = kernel.reference(student, *teacher)
            else:
                values[:, start:stop], statistics[:, start:stop] = result
        ctx.save_for_backward(student_logits, statistics, *teachers)
        ctx.kernel, ctx.chunk_size, ctx.counted, ctx.by_reference = kernel, chunk_size, counted, by_reference
        ctx.gradient = gradient
        shape = student_logits.shape[:-1]
        return values.view(shape) if num_values == 1 else values.view(num_values, *shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values: Tensor) -> tuple[Tensor | None, ...]:
        student_logits, statistics, *teachers = ctx.saved_tensors
        nones = (None,) * (4 + len(teachers))  # the kernel, chunk size, mask, flag and teachers get none
        if not ctx.needs_input_grad[0]:
            return None, *nones
        kernel, chunk_size = ctx.kernel, ctx.chunk_size
        # The gradient started in the forward pass goes to autograd in the first backward pass; another one (through
        # a retained graph) computes it anew.
        gradient, ctx.gradient = ctx.gradient, None
        kept = gradient is not None
        if not kept:
            gradient = torch.empty_like(student_logits, memory_format=torch.contiguous_format)
        weights = grad_values.reshape(kernel.num_values, -1).float()
        if kernel.num_values == 1:
            weights = weights[0]
        buffers = _buffers(student_logits, kernel.num_buffers, chunk_size)
        staging = None if gradient.dtype == torch.float32 else _buffers(student_logits, 1, chunk_size)[0]
        for start, stop, (student, chunk_gradient, *teacher) in aligned_chunks(
            [student_logits, gradient, *teachers], chunk_size
        ):
            chunk_weights = weights[..., start:stop]
            if ctx.counted is not None and not ctx.counted[start:stop].any():
                if not kept:
                    chunk_gradient.zero_()
            elif (start, stop) in ctx.by_reference:
                chunk_gradient.copy_(differentiate_chunk(kernel.reference, student, teacher, chunk_weights)[1])
            else:
                out = chunk_gradient if staging is None else staging[: stop - start]
                kernel.gradient(student, teacher, statistics[:, start:stop], chunk_weights, out, buffers, kept)
                if out is not chunk_gradient:
                    chunk_gradient.copy_(out)
        return gradient, *nones


def _buffers(student_logits: Tensor, count: int, chunk_size: int) -> list[Tensor]:
    """`count` float32 tensors `(chunk, V)`."""
    rows = min(chunk_size, student_logits.shape[:-1].numel())
    shape = (rows, student_logits.shape[-1])
    return [student_logits.new_empty(shape, dtype=torch.float32) for _ in range(count)]
