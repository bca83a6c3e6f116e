"""Terms on intermediate representations of student and teacher: hidden states and features recorded by module path."""

from dataclasses import dataclass, field

from torch import Tensor, nn

from ..losses import (
    attention_transfer_loss,
    cosine_hidden_loss,
    hint_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    similarity_preserving_loss,
)
from .base import DistillationBatch, TermLoss

# Feature hints compare student and teacher features position by position, through a projection when widths differ.
HINT_LOSSES = ("l2", "l1", "cosine", "mmd")
RELATION_LOSSES = {
    "sp": similarity_preserving_loss,
    "rkd_distance": rkd_distance_loss,
    "rkd_angle": rkd_angle_loss,
}
FEATURE_LOSSES = (*HINT_LOSSES, "at", *RELATION_LOSSES)


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


def _width_dim(feature: Tensor) -> int:
    """The dimension a projection changes: channels of `(B, C, H, W)` maps, the last one otherwise."""
    return 1 if feature.dim() == 4 else feature.dim() - 1


def make_projection(student_feature: Tensor, teacher_feature: Tensor) -> nn.Module:
    """FitNets' regressor from the student's width to the teacher's: a 1x1 convolution for `(B, C, H, W)` maps, a
    linear layer for `(B, ..., H)` vectors."""
    if student_feature.dim() == 4:
        return nn.Conv2d(student_feature.shape[1], teacher_feature.shape[1], kernel_size=1)
    return nn.Linear(student_feature.shape[-1], teacher_feature.shape[-1])


@dataclass(eq=False)
class FeatureTerm:
    """A loss between the outputs of a student module and a teacher module, recorded by module path with hooks.

    Module paths are those of `named_modules()` on the unwrapped models: timm's `"layer3"` or `"stages.2"`,
    transformers' `"bert.encoder.layer.1"` or `"model.layers.1"` (a tuple output gives its first tensor, the hidden
    states `(B, L, H)`). For several teachers, teacher paths start with the teacher's key: `"teachers.0.layer3"`.

    Losses (see :mod:`hf_distill.losses`):

    - Feature hints, `"l2"` and `"l1"` (FitNets), `"cosine"` and `"mmd"` (NST), on `(B, C, H, W)`, `(B, L, H)` or
      `(B, H)` features of equal shape but for the width (channels, hidden size). When widths differ, the student's
      feature goes through a learned projection to the teacher's width first (:func:`make_projection`: FitNets'
      regressor), which the trainer builds before training, trains with the student, keeps in checkpoints and never
      saves with the student. On `(B, L, H)` hidden states, `"l2"`, `"l1"` and `"cosine"` count only the tokens of
      the batch's `attention_mask`, when it has one.
    - `"at"`: attention transfer between `(B, C, H, W)` maps of the same B, H and W; any channel counts.
    - `"sp"`, `"rkd_distance"`, `"rkd_angle"`: relations between the examples of the batch (similarity preserving,
      RKD), on features of any widths, flattened per example.

    Every loss is a mean over the micro-batch (normalizer `"batch"`): under gradient accumulation, and across
    processes, the micro-batch means are averaged, which equals the mean over the whole batch when micro-batches
    have equal sizes. For the relation losses (SP, RKD) the relations themselves are those within one micro-batch on
    one process: examples of different micro-batches or processes are never compared, so their values depend on the
    per-device batch size, not only on the global batch (as in their authors' single-GPU code).

    Args:
        student_module: path of the student module whose output is compared.
        teacher_module: path of the teacher module.
        loss: one of `"l2"`, `"l1"`, `"cosine"`, `"mmd"`, `"at"`, `"sp"`, `"rkd_distance"`, `"rkd_angle"`.
        weight: the term's weight in the training loss (the authors' values: AT 1000, SP 3000, RKD distance 25 and
            angle 50, NST 50, FitNets hints 100 in RepDistiller's CIFAR-100 set-up).
        name: logged as `<name>_loss`; by default `"<loss>_<student_module>"`.
    """

    student_module: str
    teacher_module: str
    loss: str = "l2"
    weight: float = 1.0
    name: str | None = None
    needs_teacher: bool = field(default=True, init=False)
    projection: nn.Module | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.loss not in FEATURE_LOSSES:
            raise ValueError(f"Unknown feature loss {self.loss!r}; choose one of {list(FEATURE_LOSSES)}.")
        if self.name is None:
            self.name = f"{self.loss}_{self.student_module}"

    @property
    def student_modules(self) -> tuple[str, ...]:
        return (self.student_module,)

    @property
    def teacher_modules(self) -> tuple[str, ...]:
        return (self.teacher_module,)

    def setup(self, student_features: dict[str, Tensor], teacher_features: dict[str, Tensor]) -> nn.Module | None:
        """Check the features of a first batch and build the projection a hint needs; returns it, or `None`."""
        student, teacher = self._pair(student_features, teacher_features)
        self.projection = None
        if self.loss in HINT_LOSSES and student.shape[_width_dim(student)] != teacher.shape[_width_dim(teacher)]:
            self.projection = make_projection(student, teacher)
        return self.projection

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        student, teacher = self._pair(batch.student_features, batch.teacher_features)
        if self.loss == "at":
            value = attention_transfer_loss(student, teacher)
        elif self.loss in RELATION_LOSSES:
            value = RELATION_LOSSES[self.loss](student, teacher)
        else:
            attention_mask = batch.inputs.get("attention_mask")
            if self.loss != "mmd" and student.dim() == 3 and attention_mask is not None:
                if attention_mask.shape == student.shape[:2] == teacher.shape[:2]:
                    tokens = attention_mask.bool()
                    student, teacher = student[tokens], teacher[tokens]  # (N, H_s), (N, H_t)
            if self.projection is not None:
                weight = next(self.projection.parameters())
                student = self.projection(student.to(weight.dtype))
            value = hint_loss(student, teacher, self.loss)  # raises naming both shapes if widths still differ
        return TermLoss(value.reshape(1), None, "batch")

    def _pair(self, student_features: dict[str, Tensor], teacher_features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The two recorded features, checked for shapes that no projection can reconcile."""
        for role, features, path in (
            ("student", student_features, self.student_module),
            ("teacher", teacher_features, self.teacher_module),
        ):
            if path not in features:
                raise ValueError(
                    f"The {self.name} term found no output of the {role} module {path!r}: the module did not run in "
                    f"the {role}'s forward pass (or its hooks are not on; see DistillationTrainer.feature_capture)."
                )
        student, teacher = student_features[self.student_module], teacher_features[self.teacher_module]
        problem = None
        if student.dim() < 2 or teacher.dim() < 2 or student.shape[0] != teacher.shape[0]:
            problem = "they need the same batch size B in their first dimension"
        elif self.loss == "at" and (
            student.dim() != 4 or teacher.dim() != 4 or student.shape[2:] != teacher.shape[2:]
        ):
            problem = "attention transfer needs (B, C, H, W) maps with the same B, H and W (pool one of them)"
        elif self.loss in HINT_LOSSES:
            s_shape, t_shape = list(student.shape), list(teacher.shape)
            if student.dim() == teacher.dim():
                del s_shape[_width_dim(student)], t_shape[_width_dim(teacher)]
            if student.dim() != teacher.dim() or s_shape != t_shape or student.dim() > 4:
                problem = (
                    "a feature hint needs (B, C, H, W), (B, L, H) or (B, H) features equal in all but the width "
                    "(channels, hidden size), which a projection maps"
                )
        if problem is not None:
            raise ValueError(
                f"The {self.name} term ({self.loss!r}) cannot compare the student's {self.student_module!r} output of "
                f"shape {tuple(student.shape)} with the teacher's {self.teacher_module!r} output of shape "
                f"{tuple(teacher.shape)}: {problem}."
            )
        return student, teacher
