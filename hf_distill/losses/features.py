"""Losses on intermediate representations (hidden states, feature maps) of student and teacher.

References:
    Sanh et al. "DistilBERT, a distilled version of BERT", 2019. https://arxiv.org/abs/1910.01108
"""

import torch.nn.functional as F
from torch import Tensor

from .reduction import Reduction, reduce_loss


def cosine_hidden_loss(
    student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    r"""DistilBERT's cosine loss aligning hidden states: :math:`1 - \cos(h_s, h_t)` per position.

    Args:
        student_hidden: `(..., H)` student hidden states.
        teacher_hidden: `(..., H)` teacher hidden states (same width; project the student first otherwise).
        mask: optional boolean `(...)`, e.g. the attention mask.
        reduction: as in :func:`reduce_loss`.
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"Student hidden states {tuple(student_hidden.shape)} and teacher hidden states "
            f"{tuple(teacher_hidden.shape)} differ in shape."
        )
    per_position = 1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.detach().float(), dim=-1)
    return reduce_loss(per_position, mask, reduction)
