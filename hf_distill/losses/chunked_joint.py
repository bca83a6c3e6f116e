r"""Hinton's two losses on the same token-level logits in one pass over chunks: the soft loss to the teacher at
temperature T (the forward KL, against full logits or a top-k cache) and the cross-entropy on the labels, per
position, the gradient started in the forward pass.

Shapes: logits are `(..., V)`, labels `(...)`; the values are `(...)` each.

Per position, with weights :math:`w_s, w_h` (what the reduction and the terms' weights make of each value) and label
smoothing ε:

.. math:: \frac{\partial}{\partial z_s} \big(w_s \, T^2 \mathrm{KL}(p_t^T \| p_s^T) + w_h \, \mathrm{CE}\big)
    = w_s \, T \, (p_s^T - p_t^T) + w_h \big(p_s - (1 - \varepsilon) \, \mathrm{onehot}(y) - \varepsilon / V\big)

Apart, the soft kernel and :class:`~hf_distill.losses.chunked_ce.CrossEntropyKernel` each exponentiate the student's
logits forward and backward, and each writes a gradient of the logits' size, which autograd then adds. Together, the
soft kernel writes its unweighted gradient :math:`T (p_s^T - p_t^T)` into the student's gradient in the forward pass,
and the cross-entropy takes its :math:`\log Z` from the soft kernel's exponentials where they give it: at T = 1 it
is the soft kernel's, at T = 2 (the trainer's default) the log of the sum of their squares, :math:`e^{(z - \max z)
/ 2}` squared being :math:`e^{z - \max z}`. The backward pass, which brings the weights, weighs the soft gradient
and adds the hard part, rebuilding :math:`p_s` with one exponential. At T = 1 and 2: for the forward KL on full
logits, three exponentials per element instead of six; for the top-k bucket, two instead of four (one more each at
other T); and one gradient tensor instead of two.

A caller that knows the weights autograd will bring (the trainer does: the terms' weights over their normalisers)
may announce them (`expected_weights`). Against full logits at T = 1 and 2 the forward pass then writes the whole
weighted gradient, the cross-entropy's part from the same exponentials (at T = 2 their squares), and the backward
pass only hands it out: two exponentials per element in all, and no pass over the logits in the backward. Weights
that come times a common factor (a loss scale) cost one pass; others, the gradient computed anew. Values and
gradients equal those of the kernels apart, announced or not (`tests/test_losses_chunked.py`).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from .chunked import checked_chunk_size, known_teacher_max
from .chunked_ce import CrossEntropyKernel, checked_class_labels, cross_entropy_values
from .chunked_kl import ForwardKLKernel, TopKBucketKLKernel
from .chunks import ChunkKernel, hand_derived_chunks
from .divergences import forward_kl
from .reduction import IGNORE_INDEX, check_label_shape, check_logit_shapes
from .topk import _topk_per_position_fn

# Weights within this relative distance of those announced count as announced: a few float32 roundings of them.
_WEIGHT_RTOL = 8 * torch.finfo(torch.float32).eps


def chunked_soft_and_hard_losses(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    mask: Tensor | None = None,
    chunk_size: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    teacher_max: Tensor | None = None,
    expected_weights: Tensor | None = None,
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
        teacher_max: optional `(...)`, the teacher's maximum logit per position where it is known (see
            :func:`hf_distill.validation.check_teacher_logits`), not computed again.
        expected_weights: optional `(2, ...)`, the weights :math:`w_s, w_h` per position that the caller's loss will
            give the two values (the gradient of the loss w.r.t. them; 0 where a value does not count). They change
            the time only (see the module doc): the gradient is the one of the weights that autograd brings.

    Returns:
        `(soft, hard)`, each `(...)` in float32, from one autograd node.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    check_logit_shapes(student_logits, teacher_logits)

    def soft_reference(student: Tensor, teacher: Tensor, *known_max: Tensor) -> Tensor:
        return forward_kl(student, teacher, temperature) * temperature**2

    soft = ForwardKLKernel(temperature, soft_reference)
    teachers = [teacher_logits.detach(), *known_teacher_max(student_logits, teacher_max)]
    if expected_weights is None:
        return _together(soft, student_logits, teachers, labels, label_smoothing, mask, chunk_size, ignore_index)
    if expected_weights.shape != (2, *labels.shape):
        expected = (2, *labels.shape)
        raise ValueError(
            f"expected_weights of shape {tuple(expected_weights.shape)} must be {expected}: the soft and the hard "
            "weight per position."
        )
    announced = expected_weights.detach().float().movedim(0, -1).contiguous()
    return _together(
        soft, student_logits, teachers, labels, label_smoothing, mask, chunk_size, ignore_index, announced
    )


def chunked_topk_soft_and_hard_losses(
    student_logits: Tensor,
    teacher_topk_values: Tensor,
    teacher_topk_indices: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    mask: Tensor | None = None,
    chunk_size: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    """:func:`chunked_soft_and_hard_losses` against a top-k teacher (`tail="bucket"`, forward KL): the values and
    gradients of :func:`~hf_distill.losses.chunked_topk_soft_target_loss` and the cross-entropy, the top-k arguments
    as there."""
    reference = _topk_per_position_fn(
        student_logits, teacher_topk_values, teacher_topk_indices, temperature, "bucket", "forward_kl", 0.5
    )
    soft = TopKBucketKLKernel(temperature, reference)
    teachers = [teacher_topk_values.detach(), teacher_topk_indices]
    return _together(soft, student_logits, teachers, labels, label_smoothing, mask, chunk_size, ignore_index)


def _together(
    soft: ChunkKernel,
    student_logits: Tensor,
    teachers: list[Tensor],
    labels: Tensor,
    label_smoothing: float,
    mask: Tensor | None,
    chunk_size: int | None,
    ignore_index: int,
    announced: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    check_label_shape(student_logits, labels)
    chunk_size = checked_chunk_size(student_logits, mask, "none", chunk_size)
    _, safe_labels = checked_class_labels(student_logits, labels, ignore_index)
    kernel = SoftAndHardKernel(soft, label_smoothing, announced is not None)
    extra = [safe_labels] if announced is None else [safe_labels, announced]
    soft_values, hard_values = hand_derived_chunks(student_logits, kernel, chunk_size, mask, *teachers, *extra)
    return soft_values, hard_values


@dataclass(frozen=True)
class SoftAndHardKernel:
    """A soft kernel's loss and the cross-entropy, values `(2, n)`, as a
    :class:`~hf_distill.losses.chunks.ChunkKernel` that starts the gradient in the forward pass; the teacher tensors
    are the soft kernel's, then the labels `(n, 1)`, then with `announced` the expected weights `(n, 2)`. The soft
    kernel (:class:`~hf_distill.losses.chunked_kl.ForwardKLKernel` or :class:`~hf_distill.losses.chunked_kl.
    TopKBucketKLKernel`) keeps the student's max as its first statistic, and gives the student's log Z at T = 1 by
    `untempered_log_z(statistics, buffers)` where it has it at hand (the forward KL at T = 1 and 2, the top-k bucket
    at any T), which the cross-entropy then takes instead of its own pass of exponentials; where it also adds the
    softmax to its gradient (`adds_softmax`), the announced weights let the forward pass write the whole gradient.
    Chunks it declines go to `reference`."""

    soft: ChunkKernel
    label_smoothing: float
    announced: bool = False
    num_values: int = 2
    gradient_in_forward: bool = True

    @property
    def num_buffers(self) -> int:
        return self.soft.num_buffers

    @property
    def num_statistics(self) -> int:
        return self.soft.num_statistics + 2  # then the student's max and log Z at T = 1

    @property
    def whole_gradient_in_forward(self) -> bool:
        """Whether the forward pass writes the weighted gradient of both losses (weights announced, and a soft
        kernel that adds the softmax at T = 1 from its exponentials)."""
        return self.announced and getattr(self.soft, "adds_softmax", False)

    def _split(self, teachers: list[Tensor]) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """The soft kernel's teacher tensors, the labels and the announced weights (or `None`)."""
        if self.announced:
            *soft_teachers, labels, announced = teachers
            return soft_teachers, labels, announced
        *soft_teachers, labels = teachers
        return soft_teachers, labels, None

    def values(
        self, student: Tensor, teachers: list[Tensor], buffers: list[Tensor], partial: Tensor | None = None
    ) -> tuple[Tensor, Tensor] | None:
        soft_teachers, labels, announced = self._split(teachers)
        whole = partial is not None and self.whole_gradient_in_forward
        result = self.soft.values(student, soft_teachers, buffers, None if whole else partial)
        if result is None:
            return None
        soft_values, soft_statistics = result
        smoothing, log_z = self.label_smoothing, self.soft.untempered_log_z(soft_statistics, buffers)
        if log_z is not None:  # the soft kernel's max and log Z at T = 1 are the cross-entropy's
            maximum = soft_statistics[0]
            shifted_mean = student.mean(-1, dtype=torch.float32) - maximum if smoothing else None
            hard_values = cross_entropy_values(student, labels, maximum, log_z, smoothing, shifted_mean)
            hard_statistics = torch.stack([maximum, log_z])
        else:  # the soft kernel is done with its buffers
            hard_values, hard_statistics = CrossEntropyKernel(smoothing).values(student, [labels], buffers)
        if whole:  # w_s T (p_s^T - p_t^T) + w_h (p_s - targets)
            soft_weights, hard_weights = announced.unbind(-1)
            softmax_scale = hard_weights * torch.exp(-log_z)  # w_h / Z at T = 1
            self.soft.start_gradient(soft_statistics, buffers, partial, soft_weights, softmax_scale)
            CrossEntropyKernel(smoothing).subtract_targets(partial, labels, hard_weights.unsqueeze(-1))
        return torch.stack([soft_values, hard_values]), torch.cat([soft_statistics, hard_statistics])

    def gradient(self, student, teachers, statistics, weights, out, buffers, kept=False) -> None:
        soft_teachers, labels, announced = self._split(teachers)
        if kept and self.whole_gradient_in_forward:
            factor = _common_factor(weights, announced.T)
            if factor is not None:  # the weights announced, or those times a loss scale
                if factor != 1.0:
                    out.mul_(factor)
                return
            kept = False  # other weights: the gradient anew
        soft_statistics, hard_statistics = statistics[:-2], statistics[-2:]
        self.soft.gradient(student, soft_teachers, soft_statistics, weights[0], out, buffers, kept)
        scratch = buffers[0][: student.shape[0]]
        CrossEntropyKernel(self.label_smoothing).add_gradient(
            student, labels, hard_statistics, weights[1], out, scratch
        )

    def reference(self, student: Tensor, *teachers: Tensor) -> Tensor:
        *soft_teachers, labels = teachers
        hard = CrossEntropyKernel(self.label_smoothing).reference(student, labels)
        return torch.stack([self.soft.reference(student, *soft_teachers), hard])


def _common_factor(weights: Tensor, announced: Tensor) -> float | None:
    """The number f with `weights` = f x `announced` (both `(2, n)`; 1 when they are equal), up to a few float32
    roundings, or `None` where there is none."""
    if torch.allclose(weights, announced, rtol=_WEIGHT_RTOL, atol=0.0):
        return 1.0
    norm = announced.square().sum()
    if norm == 0:
        return None
    factor = float((weights * announced).sum() / norm)
    return factor if torch.allclose(weights, factor * announced, rtol=_WEIGHT_RTOL, atol=0.0) else None
