r"""Hinton's two losses on the same token-level logits in one pass over chunks: the forward KL to the teacher at
temperature T and the cross-entropy on the labels, per position, the gradient started in the forward pass.

Shapes: logits are `(..., V)`, labels `(...)`; the values are `(...)` each.

Per position, with weights :math:`w_s, w_h` (what the reduction and the terms' weights make of each value) and label
smoothing ε:

.. math:: \frac{\partial}{\partial z_s} \big(w_s \, T^2 \mathrm{KL}(p_t^T \| p_s^T) + w_h \, \mathrm{CE}\big)
    = w_s \, T \, (p_s^T - p_t^T) + w_h \big(p_s - (1 - \varepsilon) \, \mathrm{onehot}(y) - \varepsilon / V\big)

Apart (:class:`~hf_distill.losses.chunked_kl.ForwardKLKernel` and :class:`~hf_distill.losses.chunked_ce.
CrossEntropyKernel`), the two losses take six exponentials per element, forward and backward, and each writes a
gradient of the logits' size, which autograd then adds. Together, the forward pass has both tempered distributions
at hand and writes :math:`T (p_s^T - p_t^T)` into the student's gradient at once; at T = 1 the cross-entropy's
:math:`\log Z` is the KL's. The backward pass, which brings the weights, scales that and adds the hard part, rebuilding
:math:`p_s` with one exponential: three exponentials per element (four at T != 1) and one gradient tensor. Values and
gradients equal those of the two kernels (`tests/test_losses_chunked.py`).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from .chunked import checked_chunk_size
from .chunked_ce import CrossEntropyKernel, checked_class_labels, cross_entropy_values
from .chunked_kl import ForwardKLKernel, forward_kl_chunk_gradient
from .chunks import HandDerivedChunks
from .divergences import forward_kl
from .reduction import IGNORE_INDEX, check_logit_shapes


def chunked_soft_and_hard_losses(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    mask: Tensor | None = None,
    chunk_size: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    r"""The soft loss :math:`T^2 \, \mathrm{KL}(p_t^T \| p_s^T)` and the cross-entropy per position, `chunk_size`
    positions at a time: the values and gradients of :func:`~hf_distill.losses.chunked_soft_target_loss` (forward
    KL) and :func:`~hf_distill.losses.hard_label_loss` with `reduction="none"`, in less time and memory (see the
    module doc).

    Args:
        student_logits: `(..., V)`, possibly a non-contiguous view (the shifted logits of a causal LM).
        teacher_logits: `(..., V)`, same shape; `-inf` outside a support is allowed (such chunks go to autograd).
        labels: `(...)` class ids, `ignore_index` where none; the cross-entropy there is meaningless (mask it).
        temperature: T > 0 of the soft loss (the cross-entropy is at T = 1).
        label_smoothing: ε in [0, 1) of the cross-entropy.
        mask: optional boolean `(...)`: chunks with no true position are skipped (values and gradient 0).
        chunk_size: positions per chunk, `None` for :func:`~hf_distill.losses.chunks.default_chunk_size`.

    Returns:
        `(soft, hard)`, each `(...)` in float32, from one autograd node.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    check_logit_shapes(student_logits, teacher_logits)
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match student logits of shape "
            f"{tuple(student_logits.shape)}."
        )
    chunk_size = checked_chunk_size(student_logits, mask, "none", chunk_size)
    _, safe_labels = checked_class_labels(student_logits, labels, ignore_index)
    kernel = ForwardKLAndCrossEntropyKernel(temperature, label_smoothing)
    soft, hard = HandDerivedChunks.apply(
        student_logits, kernel, chunk_size, mask, teacher_logits.detach(), safe_labels
    )
    return soft, hard


@dataclass(frozen=True)
class ForwardKLAndCrossEntropyKernel:
    """The forward KL at temperature T and the cross-entropy, values `(2, n)`, as a
    :class:`~hf_distill.losses.chunks.ChunkKernel` that starts the gradient in the forward pass; the teacher tensors
    are the teacher's logits `(n, V)` and the labels `(n, 1)`. Chunks whose teacher has `-inf` logits go to
    `reference`, as with :class:`~hf_distill.losses.chunked_kl.ForwardKLKernel`."""

    temperature: float
    label_smoothing: float
    num_buffers: int = 3
    num_statistics: int = 6  # the KL's four (max and log Z of both), then the student's max and log Z at T = 1
    num_values: int = 2
    gradient_in_forward: bool = True

    def values(
        self, student: Tensor, teachers: list[Tensor], buffers: list[Tensor], partial: Tensor | None = None
    ) -> tuple[Tensor, Tensor] | None:
        teacher, labels = teachers
        temperature, smoothing = self.temperature, self.label_smoothing
        soft = ForwardKLKernel(temperature, self.soft_reference).values(student, [teacher], buffers)
        if soft is None:
            return None
        soft_values, (student_max, student_log_z, teacher_max, teacher_log_z) = soft
        if partial is not None:  # T (p_s^T - p_t^T), from the exponentials the KL left in its first two buffers
            student_exps, teacher_exps = (buffer[: student.shape[0]] for buffer in buffers[:2])
            torch.mul(student_exps, (temperature * torch.exp(-student_log_z)).unsqueeze(-1), out=partial)
            partial.addcmul_(teacher_exps, (-temperature * torch.exp(-teacher_log_z)).unsqueeze(-1))
        if temperature == 1.0:
            shifted_mean = student.mean(-1, dtype=torch.float32) - student_max if smoothing else None
            hard_values = cross_entropy_values(student, labels, student_max, student_log_z, smoothing, shifted_mean)
            hard_statistics = torch.stack([student_max, student_log_z])
        else:
            hard_values, hard_statistics = CrossEntropyKernel(smoothing).values(student, [labels], buffers[2:])
        statistics = torch.cat(
            [torch.stack([student_max, student_log_z, teacher_max, teacher_log_z]), hard_statistics]
        )
        return torch.stack([soft_values, hard_values]), statistics

    def gradient(self, student, teachers, statistics, weights, out, buffers, kept=False) -> None:
        teacher, labels = teachers
        soft_weights, hard_weights = weights
        if kept:
            out.mul_(soft_weights.unsqueeze(-1))
        else:
            forward_kl_chunk_gradient(student, teacher, statistics[:4], soft_weights, self.temperature, out, buffers)
        hard = buffers[0][: student.shape[0]]
        CrossEntropyKernel(self.label_smoothing).gradient(
            student, [labels], statistics[4:], hard_weights, hard, buffers
        )
        out.add_(hard)

    def reference(self, student: Tensor, teacher: Tensor, labels: Tensor) -> Tensor:
        hard = CrossEntropyKernel(self.label_smoothing).reference(student, labels)
        return torch.stack([self.soft_reference(student, teacher), hard])

    def soft_reference(self, student: Tensor, teacher: Tensor) -> Tensor:
        return forward_kl(student, teacher, self.temperature) * self.temperature**2
