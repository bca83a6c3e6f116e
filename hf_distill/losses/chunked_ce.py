r"""The cross-entropy on hard labels over chunks of positions, its gradient derived by hand, for large vocabularies.

Shapes: logits are `(..., V)`, labels `(...)`; values are `(...)`.

Per position, with :math:`b = z - \max z`, :math:`Z = \sum_c e^{b_c}` and label smoothing ε (Szegedy et al., 2016,
as `F.cross_entropy(label_smoothing=ε)` computes it):

.. math:: \ell = \log Z - (1 - \varepsilon) \, b_y - \frac{\varepsilon}{V} \sum_c b_c, \qquad
    \frac{\partial \ell}{\partial z} = \mathrm{softmax}(z) - (1 - \varepsilon) \, \mathrm{onehot}(y)
    - \frac{\varepsilon}{V}

`F.cross_entropy` keeps the log-probabilities, one float32 tensor of the logits' size, for its backward pass, and
allocates several more on the way; on a CPU, where a fresh tensor of 8 MiB costs more to fault in than to compute,
that is most of its time. Here the forward pass takes one exponential per element into a reused `chunk x V` buffer
and keeps two numbers per position (:math:`\max z`, :math:`\log Z`), from which the backward pass rebuilds the softmax
with one more exponential, in place in the gradient. Values and gradients equal `F.cross_entropy`'s up to float32
rounding (`tests/test_losses_chunked.py`).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunks import hand_derived_chunks, shifted_into, softmax_into


def chunked_cross_entropy(
    student_logits: Tensor, labels: Tensor, ignore_index: int, label_smoothing: float, chunk_size: int
) -> Tensor:
    """Cross-entropy per position `(...)` in float32, computed `chunk_size` positions at a time; its values where
    `labels == ignore_index` are meaningless and get no gradient once masked (as :func:`hard_label_loss` does with
    :func:`~hf_distill.losses.reduce_loss`). See :func:`hf_distill.losses.hard_label_loss`, whose values and
    gradients it equals."""
    counted, safe_labels = checked_class_labels(student_logits, labels, ignore_index)
    kernel = CrossEntropyKernel(label_smoothing)
    return hand_derived_chunks(student_logits, kernel, chunk_size, counted, safe_labels)


def checked_class_labels(student_logits: Tensor, labels: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """`(counted, safe_labels)`: where `labels` `(...)` counts, and the labels as `(..., 1)` with 0 where ignored;
    a clear error for a counted label outside `[0, V)` of the `(..., V)` logits."""
    num_classes = student_logits.shape[-1]
    counted = labels != ignore_index
    out_of_range = counted & ((labels < 0) | (labels >= num_classes))
    if out_of_range.any():
        raise ValueError(
            f"labels must be class ids in [0, {num_classes - 1}] or {ignore_index} (ignored); got "
            f"{labels[out_of_range][0].item()}."
        )
    return counted, labels.masked_fill(~counted, 0).unsqueeze(-1)


def cross_entropy_values(
    student: Tensor,
    labels: Tensor,
    maximum: Tensor,
    log_z: Tensor,
    label_smoothing: float,
    shifted_mean: Tensor | None,
) -> Tensor:
    r"""The cross-entropy `(n,)` of the `(n, V)` logits from their `maximum`, `log_z` (:math:`\log \sum e^{z - \max
    z}`) and `shifted_mean` (the mean of :math:`z - \max z`, read only with label smoothing); labels `(n, 1)`."""
    label_logit = student.gather(-1, labels).float().squeeze(-1)
    values = log_z - (1.0 - label_smoothing) * (label_logit - maximum)
    return values - label_smoothing * shifted_mean if label_smoothing else values


@dataclass(frozen=True)
class CrossEntropyKernel:
    """The cross-entropy with label smoothing and its gradient, as a :class:`~hf_distill.losses.chunks.ChunkKernel`;
    the teacher tensor is the labels `(n, 1)`."""

    label_smoothing: float
    num_buffers: int = 1
    num_statistics: int = 2
    num_values: int = 1
    gradient_in_forward: bool = False

    def values(
        self, student: Tensor, teachers: list[Tensor], buffers: list[Tensor], partial: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        (labels,) = teachers
        maximum = student.amax(-1).float()
        shifted = shifted_into(student, maximum, 1.0, buffers[0][: student.shape[0]])
        shifted_mean = shifted.mean(-1) if self.label_smoothing else None  # before the exponential overwrites it
        log_z = shifted.exp_().sum(-1).log_()
        values = cross_entropy_values(student, labels, maximum, log_z, self.label_smoothing, shifted_mean)
        return values, torch.stack([maximum, log_z])

    def gradient(self, student, teachers, statistics, weights, out, buffers, kept=False) -> None:
        probs = softmax_into(student, statistics[0], statistics[1], 1.0, out)
        self.subtract_targets(probs, teachers[0], probs.new_ones(()))
        probs.mul_(weights.unsqueeze(-1))

    def add_gradient(
        self, student: Tensor, labels: Tensor, statistics: Tensor, weights: Tensor, out: Tensor, scratch: Tensor
    ) -> None:
        """Add the gradient `(n, V)` of `sum(weights * values)` into `out` (float32), the softmax written in `scratch`
        first: one pass fewer than writing the gradient apart and adding it."""
        probs = softmax_into(student, statistics[0], statistics[1], 1.0, scratch)
        out.addcmul_(probs, weights.unsqueeze(-1))
        self.subtract_targets(out, labels, weights.unsqueeze(-1))

    def subtract_targets(self, out: Tensor, labels: Tensor, scale: Tensor) -> None:
        """Subtract `scale` times the smoothed targets, :math:`(1 - \\varepsilon) \\mathrm{onehot}(y) + \\varepsilon
        / V`, from `out` `(n, V)`; `scale` is `(n, 1)` or a number."""
        smoothing = self.label_smoothing
        if smoothing:
            out.sub_(scale * (smoothing / out.shape[-1]))
        out.scatter_add_(-1, labels, (scale * -(1.0 - smoothing)).expand(labels.shape).to(out.dtype))

    def reference(self, student: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(
            student.float(), labels.squeeze(-1), reduction="none", label_smoothing=self.label_smoothing
        )
