"""Named, weighted loss terms that the trainer sums, wiring the pure losses of :mod:`hf_distill.losses` to a batch."""

from .base import DistillationBatch, LossTerm, Normalizer, TermLoss
from .features import HiddenStateCosineTerm
from .logits import HardLabelTerm, SoftTargetTerm

__all__ = [
    "DistillationBatch",
    "HardLabelTerm",
    "HiddenStateCosineTerm",
    "LossTerm",
    "Normalizer",
    "SoftTargetTerm",
    "TermLoss",
]
