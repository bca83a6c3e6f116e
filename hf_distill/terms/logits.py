"""The soft-target and hard-label terms of Hinton's loss."""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..losses import chunked_soft_target_loss, hard_label_loss, soft_target_loss, standardize_logits
from ..losses.chunked_joint import chunked_soft_and_hard_losses, chunked_topk_soft_and_hard_losses
from ..losses.chunks import default_chunk_size
from .base import DistillationBatch, LossTerm, Normalizer, TermLoss
from .topk import topk_soft_term_loss, topk_support

# With `chunk_size=None`, token-level logits of at least this many elements (16 MiB in float32) take the chunked loss:
# below it the saving is a few tens of MiB, not worth the second forward pass that the backward of the divergences
# without a hand-derived kernel (reverse KL, JSD, MSE) takes.
AUTO_CHUNK_MIN_ELEMENTS = 2**22


def use_chunked_loss(logits: Tensor, chunk_size: int | None) -> bool:
    """Whether the soft loss on `logits` runs over chunks of positions: never for `(B, C)` logits or
    `chunk_size=0`, always for `(B, L, V)` logits with a positive `chunk_size`, and with `None` from
    :data:`AUTO_CHUNK_MIN_ELEMENTS` elements up."""
    if logits.dim() < 3 or chunk_size == 0:
        return False
    return chunk_size is not None or logits.numel() >= AUTO_CHUNK_MIN_ELEMENTS


@dataclass
class SoftTargetTerm:
    """`T² * D(p_teacher^T, p_student^T)` per position; see :func:`hf_distill.losses.soft_target_loss`.

    With `standardize=True`, both logits are first Z-scored per position (:func:`hf_distill.losses.standardize_logits`,
    Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024), as their reference `kd_loss` does:
    the T² factor stays, and T then acts on logits of unit standard deviation, which amounts to a temperature of
    T·σ(z) per example and model. The authors pair it with a base temperature of 2 and a KD weight of 9 (CIFAR-100),
    where plain KD uses T = 4 and weight 0.9. Not for logits with `-inf` entries (a masked vocabulary).

    Token-level logits `(B, L, V)` may go through :func:`hf_distill.losses.chunked_soft_target_loss` (see
    :func:`use_chunked_loss`): `chunk_size` positions at a time, the same values and gradients, a fraction of the
    memory (its backward pass recomputes each chunk). `chunk_size=None` decides by size, 0 never chunks.
    """

    weight: float
    temperature: float
    divergence: str = "forward_kl"
    jsd_beta: float = 0.5
    name: str = "soft"
    standardize: bool = False
    chunk_size: int | None = None
    needs_teacher: bool = field(default=True, init=False)

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        per_position = batch.shared_values.get(self.name)
        if per_position is None:
            if batch.teacher_topk is not None:  # a top-k cache: the loss on the cached support
                return topk_soft_term_loss(self, batch, use_chunked_loss(batch.student_logits, self.chunk_size))
            per_position = self._per_position(batch)
        if batch.soft_mask is None:
            return TermLoss(per_position, None, "examples" if per_position.dim() == 1 else "batch")
        return TermLoss(per_position, batch.soft_mask, "labels" if batch.labels is not None else "batch")

    def _per_position(self, batch: DistillationBatch) -> Tensor:
        student_logits, teacher_logits = batch.student_logits, batch.teacher_logits
        if self.standardize:
            student_logits, teacher_logits = standardize_logits(student_logits), standardize_logits(teacher_logits)
        if use_chunked_loss(student_logits, self.chunk_size):
            # Positions outside the soft mask are skipped (their value is 0): the reduction leaves them out anyway.
            return chunked_soft_target_loss(
                student_logits,
                teacher_logits,
                self.temperature,
                self.divergence,
                mask=batch.soft_mask,
                reduction="none",
                jsd_beta=self.jsd_beta,
                chunk_size=self.chunk_size or None,
                teacher_max=None if self.standardize else batch.teacher_max,
            )
        return soft_target_loss(
            student_logits, teacher_logits, self.temperature, self.divergence, reduction="none", jsd_beta=self.jsd_beta
        )


@dataclass
class HardLabelTerm:
    """The student's loss on the labels per position (cross-entropy with optional label smoothing, or squared error
    for regression); see :func:`hf_distill.losses.hard_label_loss`.

    Token-level logits `(B, L, V)` may go through :func:`hf_distill.losses.chunked_ce.chunked_cross_entropy`, as the
    soft term goes through its chunked loss (:func:`use_chunked_loss`): the same values and gradients, less memory and
    time.
    """

    weight: float
    label_smoothing: float = 0.0
    chunk_size: int | None = None
    name: str = "hard"
    needs_teacher: bool = field(default=False, init=False)
    needs_labels: bool = field(default=True, init=False)

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        if batch.labels is None:
            raise ValueError(
                "The batch has no `labels`, but the hard loss has a non-zero weight: give labels, or set alpha=1.0."
            )
        per_position = batch.shared_values.get(self.name)
        if per_position is None:
            logits, chunk_size = batch.student_logits, None
            if use_chunked_loss(logits, self.chunk_size):
                chunk_size = self.chunk_size or default_chunk_size(logits)
            per_position = hard_label_loss(
                logits, batch.labels, reduction="none", label_smoothing=self.label_smoothing, chunk_size=chunk_size
            )
        return TermLoss(per_position, batch.mask, "labels")


def share_soft_and_hard(
    terms: list[LossTerm],
    batch: DistillationBatch,
    unit_weights: Callable[[Tensor | None, torch.Size, Normalizer], Tensor] | None = None,
) -> None:
    """Compute the per-position losses of the soft and hard terms together when they can be
    (:mod:`hf_distill.losses.chunked_joint`: the same values and gradients in about half the passes over the
    vocabulary, and one gradient tensor instead of two), into `batch.shared_values`. With `unit_weights(mask, shape,
    normalizer)`, the gradient of the loss w.r.t. the values of a term of weight 1 (what
    :func:`~hf_distill.terms.combine.weighted_sum` makes of the terms' masks and normalizers), the weights the
    two terms will get are announced, and against full logits the whole gradient is written in the forward pass.

    They can when `terms` hold one :class:`SoftTargetTerm` (forward KL, not standardized) and one
    :class:`HardLabelTerm`, both weighted, on token-level logits that take their chunked losses with the same chunk
    size, with class labels and the teacher's full logits or a top-k cache with the `"bucket"` tail.
    """
    softs = [term for term in terms if isinstance(term, SoftTargetTerm)]
    hards = [term for term in terms if isinstance(term, HardLabelTerm)]
    if len(softs) != 1 or len(hards) != 1:
        return
    (soft,), (hard,), logits, labels = softs, hards, batch.student_logits, batch.labels
    topk = batch.teacher_topk
    if (
        soft.weight == 0
        or hard.weight == 0
        or soft.divergence != "forward_kl"
        or soft.standardize
        or not batch.has_teacher
        or (topk is not None and topk.tail != "bucket")
        or labels is None
        or labels.is_floating_point()
        or soft.chunk_size != hard.chunk_size
        or not use_chunked_loss(logits, soft.chunk_size)
    ):
        return
    masks = [mask for mask in (batch.soft_mask, batch.mask) if mask is not None]
    options = {
        "temperature": soft.temperature,
        "label_smoothing": hard.label_smoothing,
        "mask": masks[0] | masks[1] if len(masks) == 2 else None,
        "chunk_size": soft.chunk_size or None,
    }
    if topk is None:
        expected = None
        if unit_weights is not None and torch.is_grad_enabled() and logits.requires_grad:
            # The terms' masks and normalizers on token-level logits with labels (see their `__call__`).
            masks = (batch.soft_mask, batch.mask)
            soft_unit, hard_unit = (unit_weights(mask, labels.shape, "labels") for mask in masks)
            expected = torch.stack([soft.weight * soft_unit, hard.weight * hard_unit])
        values = chunked_soft_and_hard_losses(
            logits, batch.teacher_logits, labels, teacher_max=batch.teacher_max, expected_weights=expected, **options
        )
    else:
        values = chunked_topk_soft_and_hard_losses(logits, *topk_support(batch), labels, **options)
    batch.shared_values.update({soft.name: values[0], hard.name: values[1]})
