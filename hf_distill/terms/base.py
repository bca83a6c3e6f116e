"""What a loss term sees (an aligned batch), what it returns (a per-position loss), and the protocol it follows."""

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor


class _TeacherLogits:
    """The `teacher_logits` field of :class:`DistillationBatch`: as given, or, for a top-k cache's batch given
    without them, its dense logits (:meth:`~hf_distill.terms.TopKTeacherOutputs.logits`, `-inf` outside the top k
    and cut to the student's classes) formed on first read. The trainer's own terms read the cached support itself;
    a `(..., V)` tensor is written only for a term that asks for the logits (a user's term, the support of logits cut
    to a shared vocabulary)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = f"_{name}"

    def __get__(self, batch: "DistillationBatch | None", owner: type | None = None) -> Tensor | None:
        if batch is None:
            raise AttributeError(self.key)  # a dataclass field without a default
        logits = batch.__dict__.get(self.key)
        topk = batch.teacher_topk
        if logits is None and topk is not None:
            classes = batch.student_logits.shape[-1]
            logits = topk.logits(max(classes, topk.max_index + 1))[..., :classes]
            batch.__dict__[self.key] = logits
        return logits

    def __set__(self, batch: "DistillationBatch", logits: Tensor | None) -> None:
        batch.__dict__[self.key] = logits


@dataclass
class DistillationBatch:
    """What a loss term sees for one batch, already aligned position by position.

    For causal LMs the trainer has applied the shift: `student_logits[..., i, :]` predicts `labels[..., i]`.

    Attributes:
        inputs: the batch as given to the student (without labels or cached teacher logits).
        student_logits: `(..., C)` student logits.
        teacher_logits: `(..., C)` teacher logits, or `None` when the run has no teacher. For a top-k cache's batch
            (`teacher_topk`), formed from the cached top k on first read (`-inf` elsewhere).
        labels: `(...)` class ids with -100 where ignored, or `None` for unlabelled data.
        mask: `(...)` boolean, true at the positions that count for the labels: `labels != -100`, else the attention
            mask, else `None` (every position counts).
        soft_mask: `(...)` boolean, the positions the teacher's soft targets cover (see
            :func:`hf_distill.losses.soft_loss_mask`): `None` (every example) for classification, labelled or not;
            the labelled tokens, else the attention mask, for token-level logits.
        student_outputs: the student's raw output (a `ModelOutput` for transformers models, a tensor for timm).
        teacher_outputs: the teacher's raw output, or `None`.
        student_features: the student's intermediate outputs recorded by module path, for the modules that the
            terms name in `student_modules` (see :class:`hf_distill.hooks.FeatureRecorder`); they carry gradients.
        teacher_features: the teacher's, for `teacher_modules`, detached.
        step: the optimizer step this batch trains, counted from 1 (`TrainerState.global_step + 1`); in evaluation,
            the number of steps completed. Terms with a schedule (DKD's warm-up) read it.
        shared_values: per-position losses computed for several terms at once, keyed by term name; a term finding
            its name here takes them (see :func:`hf_distill.terms.logits.share_soft_and_hard`).
        teacher_topk: a top-k cache's batch (:class:`~hf_distill.terms.TopKTeacherOutputs`, at the positions of the
            logits), or `None`. The soft term takes its loss on the cached support.
        teacher_max: the teacher's maximum logit per position `(...)` where the trainer's check of its logits has
            computed it (see :func:`hf_distill.validation.check_teacher_logits`), or `None`; the chunked forward KL
            takes it instead of computing it again.
    """

    inputs: dict[str, Any]
    student_logits: Tensor
    teacher_logits: Tensor | None = _TeacherLogits()
    labels: Tensor | None
    mask: Tensor | None
    soft_mask: Tensor | None = None
    student_outputs: Any = None
    teacher_outputs: Any = None
    student_features: dict[str, Tensor] = field(default_factory=dict)
    teacher_features: dict[str, Tensor] = field(default_factory=dict)
    step: int = 0
    shared_values: dict[str, Tensor] = field(default_factory=dict)
    teacher_topk: Any = None
    teacher_max: Tensor | None = None

    @property
    def has_teacher(self) -> bool:
        """Whether the batch has teacher outputs (logits or a top-k cache), without forming dense logits."""
        return self.teacher_topk is not None or self.__dict__["_teacher_logits"] is not None


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
    `False`) asks both models for `hidden_states`; `student_modules` and `teacher_modules` (default empty): module
    paths whose outputs the trainer records into `batch.student_features` / `batch.teacher_features`;
    `setup(student_features, teacher_features)`: called once before training with the features of a first batch,
    to check their shapes and return the term's own trainable module (a projection) or `None`. The trainer trains
    such a module with the student and keeps it in checkpoints, but never in the saved student.
    """

    name: str
    weight: float

    def __call__(self, batch: DistillationBatch) -> TermLoss: ...
