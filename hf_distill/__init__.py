"""hf_distill: knowledge distillation for the Hugging Face stack."""

__version__ = "0.1.0"

from .config import DistillationTrainingArguments
from .hooks import FeatureRecorder
from .losses import (
    DIVERGENCES,
    cosine_hidden_loss,
    distillation_loss,
    forward_kl,
    hard_label_loss,
    jsd,
    logit_mse,
    reverse_kl,
    soft_target_loss,
)
from .metrics import classification_metrics, load_metric
from .students import SUPPORTED_MODEL_TYPES, every_other_layer, student_from_teacher
from .teachers import TeacherCacheMismatchError, TeacherEnsemble, cache_teacher_outputs, check_teacher_cache
from .terms import (
    DistillationBatch,
    DISTTerm,
    DKDTerm,
    FeatureTerm,
    HardLabelTerm,
    HiddenStateCosineTerm,
    LossTerm,
    SoftTargetTerm,
    TermLoss,
)
from .trainer import DistillationTrainer

__all__ = [
    "DISTTerm",
    "DIVERGENCES",
    "DKDTerm",
    "SUPPORTED_MODEL_TYPES",
    "DistillationBatch",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "FeatureRecorder",
    "FeatureTerm",
    "HardLabelTerm",
    "HiddenStateCosineTerm",
    "LossTerm",
    "SoftTargetTerm",
    "TeacherCacheMismatchError",
    "TeacherEnsemble",
    "TermLoss",
    "__version__",
    "cache_teacher_outputs",
    "check_teacher_cache",
    "classification_metrics",
    "cosine_hidden_loss",
    "distillation_loss",
    "every_other_layer",
    "forward_kl",
    "hard_label_loss",
    "jsd",
    "load_metric",
    "logit_mse",
    "reverse_kl",
    "soft_target_loss",
    "student_from_teacher",
]
