"""Losses on the relations between the examples of a batch: distances, angles and similarities (RKD, SP).

Shapes: embeddings or features are `(B, ...)`, flattened to `(B, D)` per example as HobbitLong/RepDistiller does
(`f.view(B, -1)`); student and teacher need the same batch size B but may differ in width D. Each loss returns a scalar
in float32; the teacher's features are constant targets (detached).

References:
    Park et al. "Relational Knowledge Distillation" (RKD), CVPR 2019. https://arxiv.org/abs/1904.05068
    Tung, Mori. "Similarity-Preserving Knowledge Distillation" (SP), ICCV 2019. https://arxiv.org/abs/1907.09682
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def _flatten_pair(student: Tensor, teacher: Tensor, name: str, min_batch: int = 1) -> tuple[Tensor, Tensor]:
    """Check the batch sizes, flatten both to `(B, D)` in float32, and detach the teacher."""
    if student.dim() < 2 or teacher.dim() < 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"{name} takes (B, ...) student and teacher inputs with the same batch size, got student "
            f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}."
        )
    if student.shape[0] < min_batch:
        raise ValueError(f"{name} needs a batch of at least {min_batch} examples, got {student.shape[0]}.")
    return student.float().flatten(1), teacher.detach().float().flatten(1)


def _pairwise_distances(embeddings: Tensor, eps: float = 1e-12) -> Tensor:
    """`(B, D)` -> `(B, B)` Euclidean distances, computed as the RKD authors' `pdist(e, squared=False, eps)`: squared
    distances from the Gram matrix clamped at eps before the square root, and an exact 0 on the diagonal."""
    squared_norms = embeddings.pow(2).sum(dim=1)
    gram = embeddings @ embeddings.t()
    squared = (squared_norms.unsqueeze(1) + squared_norms.unsqueeze(0) - 2 * gram).clamp(min=eps)
    diagonal = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    return squared.sqrt().masked_fill(diagonal, 0.0)


def _normalized_distances(embeddings: Tensor) -> Tensor:
    """Pairwise distances divided by the mean of the positive ones, :math:`\\mu` in the RKD paper."""
    distances = _pairwise_distances(embeddings)
    return distances / distances[distances > 0].mean()


def rkd_distance_loss(student_embeddings: Tensor, teacher_embeddings: Tensor) -> Tensor:
    r"""RKD's distance-wise loss: match the batch's pairwise distances, each normalised by its mean (Park et al.).

    .. math::
        \psi_D(e_i, e_j) = \frac{\|e_i - e_j\|_2}{\mu}, \quad
        \mu = \mathrm{mean}\{\|e_k - e_l\|_2 > 0\}, \quad
        \mathcal{L}_{RKD\text{-}D} = \frac{1}{B^2} \sum_{i, j} \ell_\delta\big(\psi_D(s_i, s_j), \psi_D(t_i, t_j)\big)

    with the Huber loss :math:`\ell_\delta` (`smooth_l1_loss`, δ = 1), averaged over all B² pairs, the zero diagonal
    included. Exactly `RkdDistance` of the authors' code (lenscloth/RKD, `metric/loss.py`, with `pdist(e,
    squared=False, eps=1e-12)` from `metric/utils.py`; its `reduction='elementwise_mean'` is the old name of
    `'mean'`). The authors and RepDistiller weight it by 25 (and the angle loss by 50) outside.

    Args:
        student_embeddings: `(B, D_s)` student embeddings, or `(B, ...)` flattened to `(B, -1)`.
        teacher_embeddings: `(B, D_t)` teacher embeddings, or `(B, ...)` flattened; B ≥ 2.

    Returns:
        A scalar tensor, in float32.
    """
    student, teacher = _flatten_pair(student_embeddings, teacher_embeddings, "rkd_distance_loss", min_batch=2)
    return F.smooth_l1_loss(_normalized_distances(student), _normalized_distances(teacher), reduction="mean")


def _angles(embeddings: Tensor) -> Tensor:
    """`(B, D)` -> `(B*B*B,)`: the cosines between `e_j - e_i` and `e_k - e_i` at `[i, j, k]` (apex i)."""
    differences = embeddings.unsqueeze(0) - embeddings.unsqueeze(1)  # (B, B, D): e_j - e_i at [i, j]
    unit = F.normalize(differences, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).view(-1)


def rkd_angle_loss(student_embeddings: Tensor, teacher_embeddings: Tensor) -> Tensor:
    r"""RKD's angle-wise loss: match the angles formed by every triplet of the batch (Park et al.).

    .. math::
        \psi_A(e_i, e_j, e_k) = \left\langle \frac{e_i - e_j}{\|e_i - e_j\|_2},
            \frac{e_k - e_j}{\|e_k - e_j\|_2} \right\rangle, \quad
        \mathcal{L}_{RKD\text{-}A} = \frac{1}{B^3} \sum_{i, j, k}
            \ell_\delta\big(\psi_A(s_i, s_j, s_k), \psi_A(t_i, t_j, t_k)\big)

    with the Huber loss :math:`\ell_\delta` (`smooth_l1_loss`, δ = 1), averaged over all B³ triplets; a zero difference
    (i = j or k = j) normalises to the zero vector, giving a cosine of 0 for both. Exactly `RKdAngle` of the authors'
    code (lenscloth/RKD, `metric/loss.py`, `reduction='elementwise_mean'`, i.e. `'mean'`). Memory grows as B²·D + B³.

    Args:
        student_embeddings: `(B, D_s)` student embeddings, or `(B, ...)` flattened to `(B, -1)`.
        teacher_embeddings: `(B, D_t)` teacher embeddings, or `(B, ...)` flattened.

    Returns:
        A scalar tensor, in float32.
    """
    student, teacher = _flatten_pair(student_embeddings, teacher_embeddings, "rkd_angle_loss")
    return F.smooth_l1_loss(_angles(student), _angles(teacher), reduction="mean")


def _similarity_matrix(feature: Tensor) -> Tensor:
    """`(B, D)` -> `(B, B)`: the Gram matrix :math:`f f^T` with L2-normalised rows."""
    return F.normalize(torch.mm(feature, feature.t()))


def similarity_preserving_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    r"""Similarity-preserving KD: match the batch's row-normalised similarity matrices (Tung & Mori).

    .. math::
        G = \mathrm{rownorm}(F F^\top) \in \mathbb{R}^{B \times B}, \quad
        \mathcal{L}_{SP} = \frac{1}{B^2} \, \| G_s - G_t \|_F^2

    with F the `(B, D)` flattened features. Exactly RepDistiller's `Similarity.similarity_loss`
    (HobbitLong/RepDistiller, `distiller_zoo/SP.py`, verified there by the paper's authors), except that it returns a
    0-dim tensor where RepDistiller returns shape `(1,)`. RepDistiller weights it by γ = 3000 on CIFAR-100.

    Args:
        student_feature: `(B, ...)` student features, flattened to `(B, -1)`.
        teacher_feature: `(B, ...)` teacher features, flattened; the widths may differ.

    Returns:
        A scalar tensor, in float32.
    """
    student, teacher = _flatten_pair(student_feature, teacher_feature, "similarity_preserving_loss")
    difference = _similarity_matrix(teacher) - _similarity_matrix(student)
    return difference.pow(2).sum() / (student.shape[0] ** 2)
