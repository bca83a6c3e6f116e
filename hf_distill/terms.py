"""Named, weighted loss terms that the trainer sums: the soft and hard losses, and the ones later methods add."""

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor

from .losses import cosine_hidden_loss, hard_label_loss, soft_target_loss


@dataclass
class DistillationBatch:
    """What a loss term sees for one batch, already aligned position by position.

    For causal LMs the trainer has applied the shift: `student_logits[..., i, :]` predicts `labels[..., i]`.

    Attributes:
        inputs: the batch as given to the student (without labels or cached teacher logits).
        student_logits: `(..., C)` student logits.
        teacher_logits: `(..., C)` teacher logits, or `None` when the run has no teacher.
        labels: `(...)` class ids with -100 where ignored, or `None` for unlabelled data.
        mask: `(...)` boolean, true at the positions that count for the labels: `labels != -100`, else the attention
            mask, else `None` (every position counts).
        soft_mask: `(...)` boolean, the positions the teacher's soft targets cover (see
            :func:`hf_distill.losses.soft_loss_mask`): `None` (every example) for classification, labelled or not;
            the labelled tokens, else the attention mask, for token-level logits.
        student_outputs: the student's raw output (a `ModelOutput` for transformers models, a tensor for timm).
        teacher_outputs: the teacher's raw output, or `None`.
    """

    inputs: dict[str, Any]
    student_logits: Tensor
    teacher_logits: Tensor | None
    labels: Tensor | None
    mask: Tensor | None
    soft_mask: Tensor | None = None
    student_outputs: Any = None
    teacher_outputs: Any = None


Normalizer = Literal["labels", "examples", "batch"]


@dataclass
class TermLoss:
    """A term's loss per position, before reduction.

    Attributes:
        per_position: `(...)` loss values.
        mask: `(...)` boolean, the positions that count, or `None` for all.
        normalizer: what the term's sum is divided by in training, so that gradient accumulation and several
            processes give the mean over the whole accumulated batch: `"labels"` when `mask` is exactly the label
            mask (the Trainer's `num_items_in_batch`), `"examples"` when every example counts once (`mask` is
            `None` and `per_position` is `(B,)`); `"batch"` averages per micro-batch and divides by the number of
            accumulation steps, exact only for micro-batches of equal size.
    """

    per_position: Tensor
    mask: Tensor | None
    normalizer: Normalizer = "batch"


@runtime_checkable
class LossTerm(Protocol):
    """A named, weighted term of the training loss. It is logged as `f"{name}_loss"`.

    Optional attributes the trainer honours: `needs_teacher` (default `True`) and `needs_labels` (default `False`):
    without them the term is skipped if its weight is zero, an error otherwise; `needs_hidden_states` (default
    `False`) asks both models for `hidden_states`.
    """

    name: str
    weight: float

    def __call__(self, batch: DistillationBatch) -> TermLoss: ...


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


@dataclass
class HiddenStateCosineTerm:
    """DistilBERT's cosine loss between the last hidden states of student and teacher, over attended tokens.

    Both models must return `hidden_states` of the same width; the trainer requests them.
    """

    weight: float
    layer: int = -1
    name: str = "cosine"
    needs_teacher: bool = field(default=True, init=False)
    needs_hidden_states: bool = field(default=True, init=False)

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        student_hidden = batch.student_outputs.hidden_states[self.layer]  # (B, L, H)
        teacher_hidden = batch.teacher_outputs.hidden_states[self.layer]  # (B, L, H)
        attention_mask = batch.inputs.get("attention_mask")
        mask = attention_mask.bool() if attention_mask is not None else None
        return TermLoss(cosine_hidden_loss(student_hidden, teacher_hidden, reduction="none"), mask)
