"""Chunks of positions of `(..., V)` logits, shared by the chunked losses (:mod:`.chunked`, :mod:`.chunked_kl`)."""

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

# `per_position_fn(student_chunk, *teacher_chunks)` → the values `(n,)` of a chunk of n positions.
PerPositionFn = Callable[..., Tensor]


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
