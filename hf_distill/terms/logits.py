"""The soft-target and hard-label terms of Hinton's loss."""

from dataclasses import dataclass, field

from ..losses import hard_label_loss, soft_target_loss, standardize_logits
from .base import DistillationBatch, TermLoss


@dataclass
class SoftTargetTerm:
    """`T² * D(p_teacher^T, p_student^T)` per position; see :func:`hf_distill.losses.soft_target_loss`.

    With `standardize=True`, both logits are first Z-scored per position (:func:`hf_distill.losses.standardize_logits`,
    Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024), as their reference `kd_loss` does:
    the T² factor stays, and T then acts on logits of unit standard deviation, which amounts to a temperature of
    T·σ(z) per example and model. The authors pair it with a base temperature of 2 and a KD weight of 9 (CIFAR-100),
    where plain KD uses T = 4 and weight 0.9. Not for logits with `-inf` entries (a masked vocabulary).
    """

    weight: float
    temperature: float
    divergence: str = "forward_kl"
    jsd_beta: float = 0.5
    name: str = "soft"
    standardize: bool = False
    needs_teacher: bool = field(default=True, init=False)

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        student_logits, teacher_logits = batch.student_logits, batch.teacher_logits
        if self.standardize:
            student_logits, teacher_logits = standardize_logits(student_logits), standardize_logits(teacher_logits)
        per_position = soft_target_loss(
            student_logits,
            teacher_logits,
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
