"""Losses on intermediate representations (hidden states, feature maps) of student and teacher.

References:
    Sanh et al. "DistilBERT, a distilled version of BERT", 2019. https://arxiv.org/abs/1910.01108
    Romero et al. "FitNets: Hints for Thin Deep Nets", ICLR 2015. https://arxiv.org/abs/1412.6550
    Zagoruyko, Komodakis. "Paying More Attention to Attention" (AT), ICLR 2017. https://arxiv.org/abs/1612.03928
    Huang, Wang. "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (NST), 2017.
        https://arxiv.org/abs/1707.01219
"""

from typing import Literal

import torch
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


def _attention_map(feature: Tensor, p: int) -> Tensor:
    """`(B, C, H, W)` -> `(B, H*W)`: the channel mean of `f^p`, L2-normalised per example (authors' `at`)."""
    return F.normalize(feature.pow(p).mean(1).view(feature.size(0), -1))


def attention_transfer_loss(student_feature: Tensor, teacher_feature: Tensor, p: int = 2) -> Tensor:
    r"""Attention transfer between feature maps (Zagoruyko & Komodakis, AT).

    With the spatial attention map :math:`Q = \mathrm{vec}\big(\frac{1}{C} \sum_c F_c^{\,p}\big)` and
    :math:`\hat Q = Q / \|Q\|_2` per example:

    .. math:: \mathrm{AT} = \frac{1}{B \, H W} \sum_{i=1}^{B} \big\| \hat Q^s_i - \hat Q^t_i \big\|_2^2

    exactly the authors' code (szagoruyko/attention-transfer, `utils.py`: `at_loss`, which hard-codes p = 2;
    HobbitLong/RepDistiller's `Attention(p)` generalises it). The paper's Eq. 2 differs (a sum over channels and an
    unsquared norm); the code is what produced its results, with this loss weighted by β = 1000 per layer outside.
    Student and teacher may have different channel counts C, but need the same batch size and spatial size: the
    reference requires it too, whereas RepDistiller pools the larger map with `adaptive_avg_pool2d` to a square of the
    smaller height; here a mismatch raises, so pool (or interpolate) before calling if that is what you want.

    Args:
        student_feature: `(B, C_s, H, W)` student feature map.
        teacher_feature: `(B, C_t, H, W)` teacher feature map.
        p: the exponent applied to the activations before the channel mean (2 in the paper's experiments).

    Returns:
        A scalar tensor, in float32 (mean over the batch and the H·W positions).
    """
    if (
        student_feature.dim() != 4
        or teacher_feature.dim() != 4
        or student_feature.shape[0] != teacher_feature.shape[0]
        or student_feature.shape[2:] != teacher_feature.shape[2:]
    ):
        raise ValueError(
            f"attention_transfer_loss takes (B, C, H, W) feature maps with equal B, H and W, got student "
            f"{tuple(student_feature.shape)} and teacher {tuple(teacher_feature.shape)}."
        )
    student_attention = _attention_map(student_feature.float(), p)
    teacher_attention = _attention_map(teacher_feature.detach().float(), p)
    return (student_attention - teacher_attention).pow(2).mean()


HintKind = Literal["l2", "l1", "cosine", "mmd"]


def _neuron_selectivity(feature: Tensor) -> Tensor:
    """`(B, C, H, W)` -> `(B, C, H*W)` or `(B, L, H)` -> `(B, H, L)`: each neuron's responses over the positions,
    L2-normalised."""
    if feature.dim() == 3:
        feature = feature.transpose(1, 2)
    return F.normalize(feature.reshape(feature.shape[0], feature.shape[1], -1), dim=2)


def _polynomial_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean over the batch and all neuron pairs of :math:`k(a_i, b_j) = (a_i^T b_j)^2`, for `(B, N, M)` inputs."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2).mean()


def hint_loss(student_feature: Tensor, teacher_feature: Tensor, kind: HintKind = "l2") -> Tensor:
    r"""A feature hint: a distance between (already projected) student features and teacher features.

    - `"l2"`: FitNets' hint (Romero et al.), :math:`\frac{1}{N} \sum (f_s - f_t)^2` over all N elements, as
      HobbitLong/RepDistiller's `HintLoss` (`nn.MSELoss()`, mean). FitNets applies it to the output of a regressor on
      the student's guided layer; here that projection happens before, in the terms.
    - `"l1"`: :math:`\frac{1}{N} \sum |f_s - f_t|`.
    - `"cosine"`: :math:`1 - \cos(f_s, f_t)` over the feature dimension (the channels, dim 1, of `(B, C, H, W)` maps;
      the last dim of `(B, L, H)` and `(B, H)`), averaged over the batch and positions (as
      :func:`cosine_hidden_loss` without a mask).
    - `"mmd"`: neuron selectivity transfer (Huang & Wang, NST), the squared MMD with the polynomial kernel
      :math:`k(x, y) = (x^T y)^2` between the sets of neurons' L2-normalised response patterns over positions,

      .. math:: \mathrm{MMD}^2 = \frac{1}{B C^2} \sum_{b, i, j} \left[ k(s_i, s_j) + k(t_i, t_j) - 2 k(s_i, t_j)
          \right]

      exactly as HobbitLong/RepDistiller's `NSTLoss` (`distiller_zoo/NST.py`, `full_loss=True`) on `(B, C, H, W)`
      maps (neurons = channels, positions = H·W; RepDistiller weights it by 50). On `(B, L, H)` hidden states the
      neurons are the H hidden units and the positions the L tokens. `(B, H)` vectors have one position per neuron,
      so every normalised pattern is ±1 and the kernel constant: `"mmd"` raises for them.

    Args:
        student_feature: `(B, C, H, W)`, `(B, L, H)` or `(B, H)` student features.
        teacher_feature: teacher features of the same shape.
        kind: `"l2"`, `"l1"`, `"cosine"` or `"mmd"`.

    Returns:
        A scalar tensor, in float32.
    """
    if student_feature.shape != teacher_feature.shape or student_feature.dim() not in (2, 3, 4):
        raise ValueError(
            f"hint_loss takes student and teacher features of the same shape (B, C, H, W), (B, L, H) or (B, H), got "
            f"student {tuple(student_feature.shape)} and teacher {tuple(teacher_feature.shape)}."
        )
    student = student_feature.float()
    teacher = teacher_feature.detach().float()
    if kind == "l2":
        return F.mse_loss(student, teacher)
    if kind == "l1":
        return F.l1_loss(student, teacher)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=1 if student.dim() == 4 else -1)).mean()
    if kind == "mmd":
        if student.dim() == 2:
            raise ValueError(
                f"hint_loss(kind='mmd') needs features with positions, (B, C, H, W) or (B, L, H); got "
                f"{tuple(student.shape)}, for which the polynomial-kernel MMD is constant."
            )
        student, teacher = _neuron_selectivity(student), _neuron_selectivity(teacher)
        return (
            _polynomial_kernel_mean(teacher, teacher)
            + _polynomial_kernel_mean(student, student)
            - 2 * _polynomial_kernel_mean(student, teacher)
        )
    raise ValueError(f"Unknown hint kind {kind!r}; choose one of ['cosine', 'l1', 'l2', 'mmd'].")
