"""Logit-based distillation methods beyond Hinton's soft targets: DKD, DIST and logit standardization.

Shapes: logits are `(B, C)`; :func:`dist_loss` and :func:`standardize_logits` also take `(..., C)`. Each loss returns a
scalar in float32; the teacher's logits are constant targets (detached).

References:
    Zhao et al. "Decoupled Knowledge Distillation" (DKD), CVPR 2022. https://arxiv.org/abs/2203.08679
    Huang et al. "Knowledge Distillation from A Stronger Teacher" (DIST), NeurIPS 2022. https://arxiv.org/abs/2205.10536
    Sun et al. "Logit Standardization in Knowledge Distillation", CVPR 2024. https://arxiv.org/abs/2403.01427
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from .reduction import check_logit_shapes

# The eps of the cosine similarity in the authors' DIST code.
_DIST_EPS = 1e-8


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    r"""Decoupled knowledge distillation: target-class (TCKD) plus non-target-class (NCKD) divergences (Zhao et al.).

    With :math:`p = \mathrm{softmax}(z / T)` and y the label, the binary distribution :math:`b = (p_y, 1 - p_y)` and
    the distribution over the other classes :math:`\hat p_c = p_c / (1 - p_y)`, :math:`c \neq y`:

    .. math::
        \mathrm{DKD} = \frac{T^2}{B} \sum_{i=1}^{B} \left[ \alpha \, \mathrm{KL}(b^t_i \| b^s_i)
            + \beta \, \mathrm{KL}(\hat p^t_i \| \hat p^s_i) \right]

    Hinton's loss decomposes as :math:`\mathrm{KD} = \mathrm{TCKD} + (1 - p^t_y) \, \mathrm{NCKD}` (the paper's
    Eq. 3); DKD replaces the teacher-dependent weight of NCKD by the constant β.

    Computed exactly as `dkd_loss` in megvii-research/mdistiller (`mdistiller/distillers/DKD.py`): KL summed over the
    batch (`size_average=False`) then divided by B, times T²; :math:`\hat p` is the softmax of :math:`z / T` with 1000
    subtracted at the target class, which is exact as long as the logits stay well below 1000·T. mdistiller's `DKD`
    distiller multiplies this loss by a warm-up factor :math:`\min(\mathrm{epoch} / \mathrm{warmup}, 1)` (warmup = 20
    epochs) outside the function; that schedule is left to the caller.

    Args:
        student_logits: `(B, C)` student logits.
        teacher_logits: `(B, C)` teacher logits.
        labels: `(B,)` integer class ids in `[0, C)` (no ignored positions).
        alpha: weight of TCKD (mdistiller's `DKD.ALPHA`, 1.0).
        beta: weight of NCKD (mdistiller's `DKD.BETA`, 8.0 on CIFAR-100, 0.5 on ImageNet).
        temperature: T > 0 (mdistiller's `DKD.T`, 4.0; 1.0 on ImageNet).

    Returns:
        A scalar tensor, in float32.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    check_logit_shapes(student_logits, teacher_logits)
    if student_logits.dim() != 2 or labels.shape != student_logits.shape[:1]:
        raise ValueError(
            f"dkd_loss takes (B, C) logits and (B,) labels, got logits of shape {tuple(student_logits.shape)} and "
            f"labels of shape {tuple(labels.shape)}."
        )
    student = student_logits.float() / temperature
    teacher = teacher_logits.detach().float() / temperature
    batch_size = labels.shape[0]
    target_mask = torch.zeros_like(student).scatter_(1, labels.unsqueeze(1), 1.0)  # (B, C), 1 at the label
    other_mask = 1.0 - target_mask

    def binary(probs: Tensor) -> Tensor:  # (B, 2): probability of the target class, and of all the others
        return torch.cat([(probs * target_mask).sum(1, keepdim=True), (probs * other_mask).sum(1, keepdim=True)], 1)

    student_binary = binary(F.softmax(student, dim=1))
    teacher_binary = binary(F.softmax(teacher, dim=1))
    tckd = F.kl_div(torch.log(student_binary), teacher_binary, reduction="sum") * temperature**2 / batch_size
    student_others = F.log_softmax(student - 1000.0 * target_mask, dim=1)
    teacher_others = F.softmax(teacher - 1000.0 * target_mask, dim=1)
    nckd = F.kl_div(student_others, teacher_others, reduction="sum") * temperature**2 / batch_size
    return alpha * tckd + beta * nckd


def _pearson_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """`1 - mean_rows pearson(student_row, teacher_row)` for `(N, M)` inputs, with the authors' cosine eps."""
    student = student - student.mean(1, keepdim=True)
    teacher = teacher - teacher.mean(1, keepdim=True)
    cosine = (student * teacher).sum(1) / (student.norm(dim=1) * teacher.norm(dim=1) + _DIST_EPS)
    return 1.0 - cosine.mean()


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    r"""DIST: match the relations between predictions instead of the predictions (Huang et al.).

    With :math:`Y = \mathrm{softmax}(Z / T)` row-wise on the `(B, C)` logits and
    :math:`d_p(u, v) = 1 - \rho_{\mathrm{Pearson}}(u, v)`:

    .. math::
        \mathrm{DIST} = \beta \, T^2 \, \frac{1}{B} \sum_{i=1}^{B} d_p(Y^s_{i,:}, Y^t_{i,:})
            + \gamma \, T^2 \, \frac{1}{C} \sum_{j=1}^{C} d_p(Y^s_{:,j}, Y^t_{:,j})

    the inter-class relation (per example, over the classes) and the intra-class relation (per class, over the
    batch). Computed as the `DIST` class of the authors' code (hunto/image_classification_sota,
    `lib/models/losses/dist_kd.py`, linked from hunto/DIST_KD), with the Pearson correlation as a cosine similarity
    of centred vectors whose denominator gets `+ 1e-8`. Identical logits give 0 (up to that eps).

    Logits `(..., C)` with more leading dimensions are flattened to `(N, C)` rows, so the intra-class relation runs
    over every position; for `(B, H, W, C)` maps this is the authors' segmentation variant (hunto/DIST_KD,
    `segmentation/losses/dist_kd.py`, which has no temperature, i.e. T = 1).

    Args:
        student_logits: `(B, C)` or `(..., C)` student logits.
        teacher_logits: same shape, teacher logits.
        beta: weight of the inter-class relation (1.0 in the authors' configs).
        gamma: weight of the intra-class relation (1.0).
        temperature: T > 0 (1.0 on ImageNet, 4.0 on CIFAR-100, where the whole loss is also weighted by 2); both
            terms are scaled by T².

    Returns:
        A scalar tensor, in float32.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    check_logit_shapes(student_logits, teacher_logits)
    num_classes = student_logits.shape[-1]
    student = F.softmax(student_logits.float().reshape(-1, num_classes) / temperature, dim=1)  # (N, C)
    teacher = F.softmax(teacher_logits.detach().float().reshape(-1, num_classes) / temperature, dim=1)
    inter_class = temperature**2 * _pearson_distance(student, teacher)
    intra_class = temperature**2 * _pearson_distance(student.transpose(0, 1), teacher.transpose(0, 1))
    return beta * inter_class + gamma * intra_class


def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    r"""Z-score standardization of each row of logits (Sun et al., "Logit Standardization in KD").

    .. math:: \mathcal{Z}(z) = \frac{z - \bar z}{\sigma(z) + \varepsilon}, \quad
        \sigma(z) = \sqrt{\frac{1}{C - 1} \sum_c (z_c - \bar z)^2}

    as their reference `normalize` (sunshangquan/logit-standardization-KD, `mdistiller/distillers/KD.py`) computes
    it: `torch.std`'s default, the unbiased estimate (C - 1 in the denominator), so each output row has unbiased
    standard deviation 1 (population standard deviation :math:`\sqrt{(C - 1) / C}`). Apply it to both student and
    teacher logits before a KD loss; the authors then use a base temperature of 2 with a KD weight of 9 on CIFAR-100.

    Args:
        logits: `(..., C)` with C ≥ 2.
        eps: added to the standard deviation, 1e-7 as in the reference.

    Returns:
        `(..., C)` standardized logits, in float32.
    """
    if logits.shape[-1] < 2:
        raise ValueError(f"standardize_logits needs at least 2 classes, got logits of shape {tuple(logits.shape)}.")
    logits = logits.float()
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (eps + std)
