"""Named, weighted loss terms that the trainer sums, wiring the pure losses of :mod:`hf_distill.losses` to a batch."""

from .base import DistillationBatch, LossTerm, Normalizer, TermLoss
from .features import FEATURE_LOSSES, FeatureTerm, HiddenStateCosineTerm, make_projection
from .logit_methods import DISTTerm, DKDTerm, soft_term
from .logits import HardLabelTerm, SoftTargetTerm
from .topk import TopKTeacherOutputs, topk_soft_term_loss

__all__ = [
    "FEATURE_LOSSES",
    "DISTTerm",
    "DKDTerm",
    "DistillationBatch",
    "FeatureTerm",
    "HardLabelTerm",
    "HiddenStateCosineTerm",
    "LossTerm",
    "Normalizer",
    "SoftTargetTerm",
    "TermLoss",
    "TopKTeacherOutputs",
    "make_projection",
    "soft_term",
    "topk_soft_term_loss",
]
