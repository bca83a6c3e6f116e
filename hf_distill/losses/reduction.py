"""Reducing per-position losses over masks, and the shape check every logit loss shares."""

from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
IGNORE_INDEX = -100


def reduce_loss(per_position: Tensor, mask: Tensor | None = None, reduction: Reduction = "mean") -> Tensor:
    """Reduce a per-position loss `(...)` over the positions where `mask` `(...)` is true.

    `"mean"` divides the masked sum by the number of masked positions (the examples, for `(B,)` inputs: PyTorch's
    `batchmean`); `"sum"` returns the masked sum; `"none"` returns the input with masked-out positions zeroed.
    """
    if mask is not None:
        if mask.shape != per_position.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match loss shape {tuple(per_position.shape)}.")
        per_position = per_position.masked_fill(~mask.bool(), 0.0)
    if reduction == "none":
        return per_position
    total = per_position.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = per_position.numel() if mask is None else mask.sum()
        return total / torch.clamp_min(torch.as_tensor(count, device=total.device, dtype=total.dtype), 1.0)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")


def check_label_shape(student_logits: Tensor, labels: Tensor) -> None:
    """Raise a `ValueError` naming both shapes unless `labels` is `(...)` for `(..., C)` logits."""
    if student_logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match student logits of shape "
            f"{tuple(student_logits.shape)} (expected labels of shape {tuple(student_logits.shape[:-1])})."
        )


def check_logit_shapes(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Raise a `ValueError` naming both shapes when student and teacher logits differ (e.g. `num_labels`, vocab)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Teacher logits of shape {tuple(teacher_logits.shape)} do not match student logits of shape "
            f"{tuple(student_logits.shape)}: teacher and student must share the label space (num_labels / vocab size)."
        )
