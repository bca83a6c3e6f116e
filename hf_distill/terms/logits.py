"""The soft-target and hard-label terms of Hinton's loss."""

from dataclasses import dataclass, field

from ..losses import hard_label_loss, soft_target_loss
from .base import DistillationBatch, TermLoss


@dataclass
class SoftTargetTerm:
    """`T² * D(p_teacher^T, p_student^T)` per position; see :func:`hf_distill.losses.soft_target_loss`."""

    weight: float
    temperature: float
    divergence: str = "forward_kl"
    jsd_beta: float = 0.5
    name: str = "soft"
    needs_teacher: bool = field(default=True, init=False)

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        per_position = soft_target_loss(
            batch.student_logits,
            batch.teacher_logits,
            self.temperature,
            self.divergence,
            reduction="none",
            jsd_beta=self.jsd_beta,
        )
        if batch.soft_mask is None:
            return TermLoss(per_position, None, "examples" if per_position.dim() == 1 else "batch")
        return TermLoss(per_position, batch.soft_mask, "labels" if batch.labels is not None else "batch")


@dataclass
class HardLabelTerm:
    """The student's loss on the labels per position (cross-entropy with optional label smoothing, or squared error
    for regression); see :func:`hf_distill.losses.hard_label_loss`."""

    weight: float
    label_smoothing: float = 0.0
    name: str = "hard"
    needs_teacher: bool = field(default=False, init=False)
    needs_labels: bool = field(default=True, init=False)

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        if batch.labels is None:
            raise ValueError(
                "The batch has no `labels`, but the hard loss has a non-zero weight: give labels, or set alpha=1.0."
            )
        per_position = hard_label_loss(
            batch.student_logits, batch.labels, reduction="none", label_smoothing=self.label_smoothing
        )
        return TermLoss(per_position, batch.mask, "labels")
