"""Distillation losses as pure functions on tensors, grouped by what they compare.

- :mod:`.divergences`: divergences between tempered teacher and student distributions, per position.
- :mod:`.logits`: the soft-target and hard-label losses on logits, and Hinton's combination.
- :mod:`.chunked`: the soft-target loss over chunks of positions, for large vocabularies.
- :mod:`.chunked_kl`: the forward KL over chunks with its gradient derived by hand (the chunked default), and the
  same for a top-k teacher; :mod:`.chunked_ce` the cross-entropy; :mod:`.chunked_joint` both losses of Hinton's in
  one pass; :mod:`.chunks` the chunks themselves.
- :mod:`.topk`: the soft-target loss against a teacher's cached top-k log-probabilities.
- :mod:`.logit_methods`: logit-based methods beyond Hinton's: DKD, DIST and logit standardization.
- :mod:`.features`: losses on intermediate representations: DistilBERT's cosine, FitNets hints, attention transfer.
- :mod:`.relations`: losses on the relations between the examples of a batch: RKD distances and angles, SP.
- :mod:`.reduction`: masked reductions shared by all of them.
"""

from .chunked import chunked_soft_target_loss
from .divergences import DIVERGENCES, forward_kl, get_divergence, jsd, logit_mse, reverse_kl, tempered_log_probs
from .features import attention_transfer_loss, cosine_hidden_loss, hint_loss
from .logit_methods import dist_loss, dkd_loss, standardize_logits
from .logits import distillation_loss, hard_label_loss, soft_loss_mask, soft_target_loss
from .reduction import IGNORE_INDEX, Reduction, check_logit_shapes, reduce_loss
from .relations import rkd_angle_loss, rkd_distance_loss, similarity_preserving_loss
from .topk import chunked_topk_soft_target_loss, teacher_topk, topk_soft_target_loss

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "Reduction",
    "attention_transfer_loss",
    "check_logit_shapes",
    "chunked_soft_target_loss",
    "chunked_topk_soft_target_loss",
    "cosine_hidden_loss",
    "dist_loss",
    "distillation_loss",
    "dkd_loss",
    "forward_kl",
    "get_divergence",
    "hard_label_loss",
    "hint_loss",
    "jsd",
    "logit_mse",
    "reduce_loss",
    "reverse_kl",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "similarity_preserving_loss",
    "soft_loss_mask",
    "soft_target_loss",
    "standardize_logits",
    "teacher_topk",
    "tempered_log_probs",
    "topk_soft_target_loss",
]
