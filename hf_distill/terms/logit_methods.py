"""Terms for logit-based methods beyond Hinton's soft targets (DKD, DIST), and the soft term a run's arguments pick."""

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..losses import dist_loss, dkd_loss, standardize_logits
from .base import DistillationBatch, LossTerm, TermLoss
from .logits import SoftTargetTerm


def _rows(logits: Tensor, mask: Tensor | None) -> Tensor:
    """`(..., C)` logits -> `(N, C)`: the positions where `mask` is true, or all of them."""
    return logits[mask] if mask is not None else logits.reshape(-1, logits.shape[-1])


@dataclass
class DKDTerm:
    """Decoupled KD (Zhao et al., CVPR 2022): `alpha * TCKD + beta * NCKD`; see :func:`hf_distill.losses.dkd_loss`.

    Computed over the labelled positions (examples, or tokens whose label is not -100), so it needs labels. As in
    mdistiller's `DKD` distiller, the loss is multiplied by the warm-up factor `min(step / warmup_steps, 1)`, with
    `step` the optimizer step being trained counted from 1 (`batch.step`, set by the trainer): mdistiller counts
    epochs from 1 with a warm-up of 20 epochs, so `warmup_steps` is 20 epochs' worth of steps to reproduce it; 0
    turns the warm-up off. The logged `dkd_loss` includes the factor.

    DKD is a mean over the micro-batch's labelled positions (normalizer `"batch"`): under gradient accumulation and
    across processes the micro-batch means are averaged, which equals the mean over the whole batch when every
    micro-batch holds the same number of labelled positions.

    Args:
        weight: the term's weight in the training loss (mdistiller's `CE_WEIGHT` is the hard term's, 1.0).
        alpha: weight of the target-class term TCKD (1.0).
        beta: weight of the non-target-class term NCKD (8.0 on CIFAR-100, 0.5 on ImageNet).
        temperature: T > 0 (4.0; 1.0 on ImageNet).
        warmup_steps: optimizer steps over which the loss ramps up linearly; 0 for none.
        standardize: Z-score both logits first (logit standardization, Sun et al.).
    """

    weight: float
    alpha: float = 1.0
    beta: float = 8.0
    temperature: float = 4.0
    warmup_steps: int = 0
    standardize: bool = False
    name: str = "dkd"
    needs_teacher: bool = field(default=True, init=False)
    needs_labels: bool = field(default=True, init=False)

    def warmup_factor(self, step: int) -> float:
        return min(step / self.warmup_steps, 1.0) if self.warmup_steps > 0 else 1.0

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        student, teacher = _rows(batch.student_logits, batch.mask), _rows(batch.teacher_logits, batch.mask)
        labels = batch.labels[batch.mask] if batch.mask is not None else batch.labels.reshape(-1)
        if self.standardize:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        if labels.numel() == 0:  # no labelled position in this micro-batch: nothing to learn, a zero with a graph
            return TermLoss(student.float().sum().reshape(1) * 0.0, None, "batch")
        value = dkd_loss(student, teacher, labels, self.alpha, self.beta, self.temperature)
        return TermLoss((self.warmup_factor(batch.step) * value).reshape(1), None, "batch")


@dataclass
class DISTTerm:
    """DIST (Huang et al., NeurIPS 2022): Pearson relations between predictions, within each example (inter-class,
    weight `beta`) and within each class across the batch (intra-class, weight `gamma`); see
    :func:`hf_distill.losses.dist_loss`.

    Computed over the positions the teacher's soft targets cover (every example for classification; the labelled,
    else attended, tokens for token-level logits). The intra-class relation compares the examples of a micro-batch
    with each other (normalizer `"batch"`): its value depends on the per-device batch size, and under accumulation
    the micro-batch losses are averaged.

    Args:
        weight: the term's weight in the training loss (1.0 in the authors' ImageNet set-up, 2.0 on CIFAR-100).
        beta: weight of the inter-class relation (1.0).
        gamma: weight of the intra-class relation (1.0).
        temperature: T > 0 (1.0 on ImageNet, 4.0 on CIFAR-100); both relations are scaled by T².
        standardize: Z-score both logits first (logit standardization, Sun et al.).
    """

    weight: float
    beta: float = 1.0
    gamma: float = 1.0
    temperature: float = 1.0
    standardize: bool = False
    name: str = "dist"
    needs_teacher: bool = field(default=True, init=False)

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        student, teacher = _rows(batch.student_logits, batch.soft_mask), _rows(batch.teacher_logits, batch.soft_mask)
        if self.standardize:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        if student.shape[0] == 0:
            return TermLoss(student.float().sum().reshape(1) * 0.0, None, "batch")
        value = dist_loss(student, teacher, self.beta, self.gamma, self.temperature)
        return TermLoss(value.reshape(1), None, "batch")


def soft_term(args: Any) -> LossTerm:
    """The trainer's teacher term for `args.distillation_method` of a `DistillationTrainingArguments`: Hinton's soft
    targets (`"kd"`), DKD or DIST, each with `args.temperature`, the soft weight and `args.logit_standardization`."""
    weight = args.loss_weights[0]
    standardize = args.logit_standardization
    if args.distillation_method == "dkd":
        return DKDTerm(
            weight, args.dkd_alpha, args.dkd_beta, args.temperature, args.dkd_warmup_steps, standardize=standardize
        )
    if args.distillation_method == "dist":
        return DISTTerm(weight, args.dist_beta, args.dist_gamma, args.temperature, standardize=standardize)
    return SoftTargetTerm(
        weight,
        args.temperature,
        args.distillation_loss,
        args.jsd_beta,
        standardize=standardize,
        chunk_size=args.loss_chunk_size,
    )
