"""Distillation losses as pure functions on tensors.

Shapes: logits are `(..., C)` with any leading dimensions, e.g. `(B, C)` for classification or `(B, L, V)` for
token-level distillation; labels and masks are the leading dimensions `(...)`. Every divergence returns one value per
position `(...)`, summed over the classes; :func:`reduce_loss` turns that into a scalar.

References:
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015. https://arxiv.org/abs/1503.02531
    Sanh et al. "DistilBERT, a distilled version of BERT", 2019. https://arxiv.org/abs/1910.01108
    Agarwal et al. "On-Policy Distillation of Language Models" (GKD), 2024. https://arxiv.org/abs/2306.13649
"""

import math
from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
IGNORE_INDEX = -100


def tempered_log_probs(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    r"""Log-probabilities :math:`\log \mathrm{softmax}(z / T)` of student and teacher, on the teacher's support.

    Columns where the teacher's logit is `-inf` (a masked or padded vocabulary) are outside the support: the student
    is renormalised over the remaining columns, and both log-probabilities are set to 0 outside it, so that every
    divergence built from them equals the divergence of the sliced logits and has finite values and gradients.

    Args:
        student_logits: `(..., C)`.
        teacher_logits: `(..., C)`.
        temperature: T > 0.

    Returns:
        `(student_log_probs, teacher_log_probs)`, both `(..., C)` in float32.
    """
    student = student_logits.float() / temperature
    teacher = teacher_logits.float() / temperature
    outside = torch.isneginf(teacher)
    if not outside.any():
        return F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1)
    student_log_probs = F.log_softmax(student.masked_fill(outside, -math.inf), dim=-1).masked_fill(outside, 0.0)
    teacher_log_probs = F.log_softmax(teacher, dim=-1).masked_fill(outside, 0.0)
    return student_log_probs, teacher_log_probs


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""KL(p_t || p_s) per position, the divergence of Hinton et al.

    .. math:: \mathrm{KL}(p_t \| p_s) = \sum_c p_t(c) \, [\log p_t(c) - \log p_s(c)],
        \quad p = \mathrm{softmax}(z / T)

    Columns where the teacher's logit is `-inf` are left out (see :func:`tempered_log_probs`).

    Args:
        student_logits: `(..., C)` student logits z_s.
        teacher_logits: `(..., C)` teacher logits z_t.
        temperature: softmax temperature T > 0.

    Returns:
        `(...)` divergence per position, in float32. Not scaled by T².
    """
    student_log_probs, teacher_log_probs = tempered_log_probs(student_logits, teacher_logits, temperature)
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""KL(p_s || p_t) per position: mode-seeking, used for generative students (MiniLLM, GKD).

    .. math:: \mathrm{KL}(p_s \| p_t) = \sum_c p_s(c) \, [\log p_s(c) - \log p_t(c)]

    Shapes as in :func:`forward_kl`: `(..., C)` logits in, `(...)` out; columns where the teacher's logit is `-inf`
    are left out. Not scaled by T².
    """
    student_log_probs, teacher_log_probs = tempered_log_probs(student_logits, teacher_logits, temperature)
    return F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True).sum(-1)


def jsd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, beta: float = 0.5) -> Tensor:
    r"""Generalized Jensen-Shannon divergence per position (GKD, Agarwal et al. 2024).

    .. math:: \mathrm{JSD}_\beta = \beta \, \mathrm{KL}(p_t \| m) + (1 - \beta) \, \mathrm{KL}(p_s \| m),
        \quad m = \beta p_t + (1 - \beta) p_s

    `beta=0.5` is the symmetric Jensen-Shannon divergence, bounded by log 2. Columns where the teacher's logit is
    `-inf` are left out.

    Args:
        student_logits: `(..., C)`.
        teacher_logits: `(..., C)`.
        temperature: softmax temperature T > 0.
        beta: mixture weight of the teacher, in (0, 1).

    Returns:
        `(...)` divergence per position, in float32. Not scaled by T².
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in the open interval (0, 1), got {beta}.")
    student_log_probs, teacher_log_probs = tempered_log_probs(student_logits, teacher_logits, temperature)
    mixture_log_probs = torch.logsumexp(
        torch.stack([teacher_log_probs + math.log(beta), student_log_probs + math.log(1.0 - beta)]), dim=0
    )
    kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
    kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True).sum(-1)
    return beta * kl_teacher + (1.0 - beta) * kl_student


def logit_mse(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Mean squared error between tempered logits per position (Ba & Caruana, 2014).

    .. math:: \frac{1}{|S|} \sum_{c \in S} \left(\frac{z_s(c) - z_t(c)}{T}\right)^2

    over the support S, the columns where the teacher's logit is not `-inf` (all of them, usually). After the T²
    scaling of :func:`soft_target_loss` this is the plain logit MSE, independent of T.

    Shapes as in :func:`forward_kl`: `(..., C)` logits in, `(...)` out.
    """
    difference = (student_logits.float() - teacher_logits.float()) / temperature
    outside = torch.isneginf(teacher_logits)
    if not outside.any():
        return difference.pow(2).mean(-1)
    # Zero the difference outside the support before squaring, so that no inf reaches the backward pass.
    squared = difference.masked_fill(outside, 0.0).pow(2)
    return squared.sum(-1) / (~outside).sum(-1).clamp_min(1)


DIVERGENCES: dict[str, Callable[..., Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "mse": logit_mse,
}


def get_divergence(name: str, jsd_beta: float = 0.5) -> Callable[[Tensor, Tensor, float], Tensor]:
    """Return the divergence called `name` from :data:`DIVERGENCES` as `fn(student_logits, teacher_logits, T)`."""
    if name not in DIVERGENCES:
        raise ValueError(f"Unknown distillation loss {name!r}; choose one of {sorted(DIVERGENCES)}.")
    return partial(jsd, beta=jsd_beta) if name == "jsd" else DIVERGENCES[name]


def reduce_loss(per_position: Tensor, mask: Tensor | None = None, reduction: Reduction = "mean") -> Tensor:
    """Reduce a per-position loss `(...)` over the positions where `mask` `(...)` is true.

    `"mean"` divides the masked sum by the number of masked positions (the examples, for `(B,)` inputs: PyTorch's
    `batchmean`); `"sum"` returns the masked sum; `"none"` returns the input with masked-out positions zeroed.
    """
    if mask is not None:
        if mask.shape != per_position.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match loss shape {tuple(per_position.shape)}.")
        per_position = per_position.masked_fill(~mask.bool(), 0.0)
    if reduction == "none":
        return per_position
    total = per_position.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = per_position.numel() if mask is None else mask.sum()
        return total / torch.clamp_min(torch.as_tensor(count, device=total.device, dtype=total.dtype), 1.0)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")


def check_logit_shapes(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Raise a `ValueError` naming both shapes when student and teacher logits differ (e.g. `num_labels`, vocab)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Teacher logits of shape {tuple(teacher_logits.shape)} do not match student logits of shape "
            f"{tuple(student_logits.shape)}: teacher and student must share the label space (num_labels / vocab size)."
        )


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
    """
    if student_logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match student logits of shape "
            f"{tuple(student_logits.shape)} (expected labels of shape {tuple(student_logits.shape[:-1])})."
        )
    mask = labels != ignore_index
    if labels.is_floating_point():
        if student_logits.shape[-1] != 1:
            raise ValueError(
                f"Float labels are regression targets, which need a single logit; the student has "
                f"{student_logits.shape[-1]}. Give class ids as integers."
            )
        per_position = (student_logits.float().squeeze(-1) - labels.float()).pow(2)
        return reduce_loss(per_position, mask, reduction)
    per_position = F.cross_entropy(
        student_logits.float().reshape(-1, student_logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    ).reshape(labels.shape)
    return reduce_loss(per_position, mask, reduction)


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
