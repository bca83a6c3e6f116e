"""Distillation losses as pure functions on tensors, grouped by what they compare.

- :mod:`.divergences`: divergences between tempered teacher and student distributions, per position.
- :mod:`.logits`: the soft-target and hard-label losses on logits, and Hinton's combination.
- :mod:`.features`: losses on intermediate representations.
- :mod:`.reduction`: masked reductions shared by all of them.
"""

from .divergences import DIVERGENCES, forward_kl, get_divergence, jsd, logit_mse, reverse_kl, tempered_log_probs
from .features import cosine_hidden_loss
from .logits import distillation_loss, hard_label_loss, soft_loss_mask, soft_target_loss
from .reduction import IGNORE_INDEX, Reduction, check_logit_shapes, reduce_loss

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "Reduction",
    "check_logit_shapes",
    "cosine_hidden_loss",
    "distillation_loss",
    "forward_kl",
    "get_divergence",
    "hard_label_loss",
    "jsd",
    "logit_mse",
    "reduce_loss",
    "reverse_kl",
    "soft_loss_mask",
    "soft_target_loss",
    "tempered_log_probs",
]
