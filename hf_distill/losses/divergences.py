"""Divergences between tempered teacher and student distributions, one value per position.

Shapes: logits are `(..., C)` with any leading dimensions, e.g. `(B, C)` for classification or `(B, L, V)` for
token-level distillation; every divergence returns one value per position `(...)`, summed over the classes and not
scaled by T² (:func:`hf_distill.losses.soft_target_loss` does that).

References:
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015. https://arxiv.org/abs/1503.02531
    Agarwal et al. "On-Policy Distillation of Language Models" (GKD), 2024. https://arxiv.org/abs/2306.13649
"""

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor


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


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)), accurate for x near 0 and for x very negative; -inf for x >= 0 (Mächler, 2012)."""
    x = x.clamp_max(0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


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
