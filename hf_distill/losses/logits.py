"""Losses on logits: the soft-target loss, the hard-label loss, and Hinton's combination of the two.

Shapes: logits are `(..., C)`, e.g. `(B, C)` for classification or `(B, L, V)` for token-level distillation; labels and
masks are the leading dimensions `(...)`.

References:
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015. https://arxiv.org/abs/1503.02531
    Szegedy et al. "Rethinking the Inception Architecture for Computer Vision" (label smoothing), 2016.
        https://arxiv.org/abs/1512.00567
"""

import torch.nn.functional as F
from torch import Tensor

from .chunked_ce import chunked_cross_entropy
from .divergences import get_divergence
from .reduction import IGNORE_INDEX, Reduction, check_label_shape, check_logit_shapes, reduce_loss


def soft_target_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    divergence: str = "forward_kl",
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
    jsd_beta: float = 0.5,
) -> Tensor:
    r"""Soft-target loss :math:`T^2 \, D(p_t^T, p_s^T)`, reduced over the positions in `mask`.

    The T² factor keeps the gradient magnitudes of the soft loss comparable across temperatures (Hinton et al.,
    section 2). The teacher's logits are constant targets: no gradient flows into them.

    Args:
        student_logits: `(..., C)` student logits.
        teacher_logits: `(..., C)` teacher logits, same shape.
        temperature: T > 0.
        divergence: a name from :data:`DIVERGENCES`.
        mask: optional boolean `(...)`, true where the position counts (e.g. `labels != -100`).
        reduction: `"mean"` over counted positions (batchmean for `(B, C)`), `"sum"`, or `"none"` for `(...)`.
        jsd_beta: mixture weight for `divergence="jsd"`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    check_logit_shapes(student_logits, teacher_logits)
    divergence_fn = get_divergence(divergence, jsd_beta)
    per_position = divergence_fn(student_logits, teacher_logits.detach(), temperature) * temperature**2
    return reduce_loss(per_position, mask, reduction)


def hard_label_loss(
    student_logits: Tensor,
    labels: Tensor,
    reduction: Reduction = "mean",
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Loss of the student on hard labels, ignoring `ignore_index`: cross-entropy, or squared error for regression.

    With integer labels, the cross-entropy with label smoothing ε (Szegedy et al., 2016), per position

    .. math:: (1 - \varepsilon) \, [-\log p_s(y)] + \frac{\varepsilon}{C} \sum_c [-\log p_s(c)]

    which, averaged over the counted positions, is exactly `transformers.trainer_pt_utils.LabelSmoother` (the
    Trainer's `label_smoothing_factor`). With float labels and a single logit (`num_labels=1`), the squared error
    :math:`(z_s - y)^2`, as transformers' regression heads compute it.

    Args:
        student_logits: `(..., C)`.
        labels: `(...)` integer class ids, or float targets when `C == 1`; positions equal to `ignore_index` do not
            count.
        reduction: `"mean"` over counted positions (what `nn.CrossEntropyLoss` and transformers' losses return),
            `"sum"`, or `"none"` for `(...)`.
        label_smoothing: ε in [0, 1).
        chunk_size: with integer labels, compute the cross-entropy `chunk_size` positions at a time by
            :func:`hf_distill.losses.chunked_ce.chunked_cross_entropy`: the same values and gradients, without the
            log-probabilities `F.cross_entropy` keeps (one float32 tensor of the logits' size), and faster on a CPU.
            `None`: all positions at once.
    """
    check_label_shape(student_logits, labels)
    mask = labels != ignore_index
    if labels.is_floating_point():
        if student_logits.shape[-1] != 1:
            raise ValueError(
                f"Float labels are regression targets, which need a single logit; the student has "
                f"{student_logits.shape[-1]}. Give class ids as integers."
            )
        per_position = (student_logits.float().squeeze(-1) - labels.float()).pow(2)
        return reduce_loss(per_position, mask, reduction)
    if chunk_size is not None:
        per_position = chunked_cross_entropy(student_logits, labels, ignore_index, label_smoothing, chunk_size)
        return reduce_loss(per_position, mask, reduction)
    per_position = F.cross_entropy(
        student_logits.float().reshape(-1, student_logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    ).reshape(labels.shape)
    return reduce_loss(per_position, mask, reduction)


def soft_loss_mask(student_logits: Tensor, labels: Tensor | None) -> Tensor | None:
    """The positions the soft loss covers: every example of a sequence-level task, labelled or not (Hinton's transfer
    set); for token-level logits `(B, L, V)`, the labelled tokens (prompt and padding positions are -100).

    Args:
        student_logits: `(B, C)` or `(B, L, V)`.
        labels: `(B,)` or `(B, L)` with -100 where ignored, or `None`.

    Returns:
        A boolean mask of the leading dimensions, or `None` for every position.
    """
    if labels is None or student_logits.dim() <= 2:
        return None
    return labels != IGNORE_INDEX


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""The knowledge-distillation loss of Hinton et al.

    .. math:: \alpha \, \mathrm{mean}_{soft} \, T^2 \, \mathrm{KL}(\mathrm{softmax}(z_t/T) \| \mathrm{softmax}(z_s/T))
        + (1 - \alpha) \, \mathrm{mean}_{labelled} \, \mathrm{CE}(z_s, y)

    The soft loss covers the positions of :func:`soft_loss_mask` (every example of a classification batch, labelled
    or not; the labelled tokens of token-level logits); the cross-entropy covers the labelled positions.

    Args:
        student_logits: `(..., C)`.
        teacher_logits: `(..., C)`.
        labels: `(...)` class ids with -100 for ignored positions; may be `None` only when `alpha == 1`.
        alpha: weight of the soft loss in [0, 1].
        temperature: T > 0.
        divergence: the soft loss's divergence, see :data:`DIVERGENCES`.
        jsd_beta: mixture weight for `divergence="jsd"`.
        label_smoothing: ε of the cross-entropy, see :func:`hard_label_loss`.

    Returns:
        A scalar tensor.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    if labels is None and alpha != 1.0:
        raise ValueError(f"labels are required when alpha < 1 (got alpha={alpha}).")
    mask = soft_loss_mask(student_logits, labels)
    soft = soft_target_loss(student_logits, teacher_logits, temperature, divergence, mask=mask, jsd_beta=jsd_beta)
    if labels is None:
        return soft
    hard = hard_label_loss(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard
