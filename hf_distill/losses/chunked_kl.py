r"""The forward KL divergence over chunks of positions with its gradient derived by hand, for large vocabularies.

Shapes: logits are `(N, V)` rows of positions (views of `(..., V)` logits, see
:func:`hf_distill.losses.chunks.aligned_chunks`); values are `(N,)`.

Hinton's soft loss at temperature T, per position, with :math:`a = (z_t - \max z_t) / T` and
:math:`b = (z_s - \max z_s) / T` (the tempered logits shifted by their maximum) and :math:`Z_t = \sum e^{a}`,
:math:`Z_s = \sum e^{b}`:

.. math:: T^2 \, \mathrm{KL}(p_t^T \| p_s^T) = T^2 \Big[ \frac{1}{Z_t} \sum_c e^{a_c} (a_c - b_c)
    - \log Z_t + \log Z_s \Big], \qquad \frac{\partial}{\partial z_s} = T \, (p_s^T - p_t^T)

Autograd through `log_softmax` and `kl_div` makes about twenty passes over the logits and allocates each of their
results; on a CPU, where a fresh tensor of 8 MiB costs more to fault in than to compute, that is most of the time.
Here the forward pass takes two exponentials per element into three reused `chunk x V` float32 buffers and, from
them, writes the unweighted gradient :math:`T (p_s^T - p_t^T)` into the student's gradient, which the backward pass
only weighs (see :class:`~hf_distill.losses.chunks.HandDerivedChunks`). For a student in half precision it keeps
two numbers per position instead, :math:`\max z_s` and :math:`\log Z_s` (and the teacher's), from which the
backward pass rebuilds both distributions with two more exponentials. Values equal
:func:`hf_distill.losses.forward_kl`'s up to float32 rounding; `benchmarks/loss_memory.py` measures time and memory
against autograd. Chunks with teacher logits of `-inf` (outside the support) are left to autograd on
:func:`~hf_distill.losses.forward_kl`, which renormalises the student over the support. :class:`TopKBucketKLKernel`
does the same for a top-k teacher.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from .chunks import PerPositionFn, log_sum_of_squares, row_dot, shifted_into, softmax_into
from .divergences import log1mexp


def forward_kl_chunk(
    student: Tensor, teacher: Tensor, temperature: float, buffers: list[Tensor], teacher_max: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""Values :math:`T^2 \, \mathrm{KL}(p_t^T \| p_s^T)` `(n,)` of `n` positions, and the statistics `(4, n)`
    (the student's and the teacher's max and log Z) from which :func:`forward_kl_chunk_gradient` rebuilds the
    gradient.

    Args:
        student, teacher: `(n, V)` logits of any float dtype, without `-inf`.
        temperature: T > 0.
        buffers: three float32 tensors of at least `(n, V)`, overwritten.
        teacher_max: the teacher's maximum `(n,)`, if known (then not computed again).
    """
    shifted_student, shifted_teacher, difference = (buffer[: student.shape[0]] for buffer in buffers)
    student_max = student.amax(-1).float()
    teacher_max = (teacher.amax(-1) if teacher_max is None else teacher_max).float()
    shifted_into(student, student_max, temperature, shifted_student)
    shifted_into(teacher, teacher_max, temperature, shifted_teacher)
    # a - b before exponentiating: the max-shifted logits keep it free of any constant offset of the logits.
    torch.sub(shifted_teacher, shifted_student, out=difference)
    student_z, teacher_z = shifted_student.exp_().sum(-1), shifted_teacher.exp_().sum(-1)
    cross = row_dot(shifted_teacher, difference, difference) / teacher_z  # sum_c p_t (a - b)
    student_log_z, teacher_log_z = student_z.log_(), teacher_z.log_()
    values = (cross - teacher_log_z + student_log_z) * temperature**2
    return values, torch.stack([student_max, student_log_z, teacher_max, teacher_log_z])


def forward_kl_chunk_gradient(
    student: Tensor,
    teacher: Tensor,
    statistics: Tensor,
    weights: Tensor,
    temperature: float,
    out: Tensor,
    buffers: list[Tensor],
) -> None:
    r"""Write :math:`w \, T \, (p_s^T - p_t^T)` `(n, V)`, the gradient of `sum(weights * values)` w.r.t. the
    student's logits, into `out`.

    Args:
        student, teacher: the `(n, V)` logits given to :func:`forward_kl_chunk`, and `statistics` `(4, n)` it returned.
        weights: `(n,)`.
        temperature: T > 0.
        out: `(n, V)` float32, the chunk of the student's gradient.
        buffers: a float32 tensor of at least `(n, V)` first, overwritten.
    """
    student_max, student_log_z, teacher_max, teacher_log_z = statistics
    teacher_probs = softmax_into(teacher, teacher_max, teacher_log_z, temperature, buffers[0][: student.shape[0]])
    student_probs = softmax_into(student, student_max, student_log_z, temperature, out)
    student_probs.sub_(teacher_probs).mul_((weights * temperature).unsqueeze(-1))


@dataclass(frozen=True)
class ForwardKLKernel:
    """:func:`forward_kl_chunk` and its gradient as a :class:`~hf_distill.losses.chunks.ChunkKernel`; chunks whose
    teacher has `-inf` logits (outside the support), known by their values coming out NaN, go to `reference`,
    :func:`~hf_distill.losses.forward_kl` times T², which renormalises the student over the support. With a
    `partial` gradient to start, the forward pass writes :math:`T (p_s^T - p_t^T)` from the exponentials it has at
    hand, and the backward pass only weighs it: two exponentials per element in all instead of four.

    The teacher tensors are its logits `(n, V)` and, optionally, their maximum per position `(n, 1)`, known where the
    teacher's logits were checked; `reference` takes both."""

    temperature: float
    reference: PerPositionFn
    num_buffers: int = 3
    num_statistics: int = 4  # the student's max and log Z at T, the teacher's
    num_values: int = 1
    gradient_in_forward: bool = True

    def values(
        self, student: Tensor, teachers: list[Tensor], buffers: list[Tensor], partial: Tensor | None = None
    ) -> tuple[Tensor, Tensor] | None:
        teacher, *known_max = teachers  # the teacher's logits, and their maximum `(n, 1)` where known
        teacher_max = known_max[0].squeeze(-1) if known_max else None
        values, statistics = forward_kl_chunk(student, teacher, self.temperature, buffers, teacher_max)
        if not torch.isfinite(values).all():  # a teacher's -inf makes its term 0 * -inf: no pass spent looking
            return None
        if partial is not None:
            self.start_gradient(statistics, buffers, partial)
        return values, statistics

    @property
    def adds_softmax(self) -> bool:
        """Whether :meth:`start_gradient` can add the softmax at T = 1 from the exponentials at hand (T = 1, 2)."""
        return self.temperature in (1.0, 2.0)

    def start_gradient(
        self,
        statistics: Tensor,
        buffers: list[Tensor],
        partial: Tensor,
        weights: Tensor | None = None,
        softmax_scale: Tensor | None = None,
    ) -> None:
        r"""Write :math:`T (p_s^T - p_t^T)` `(n, V)` into `partial` from the exponentials that :meth:`values` left in
        the first two buffers; with `weights` and `softmax_scale` `(n,)` (where :attr:`adds_softmax`), write
        :math:`w \, T (p_s^T - p_t^T) + c \, e^{z - \max z}` instead, at T = 2 from the squares of the
        exponentials at T = 2 (with c = h / Z at T = 1: h times the softmax)."""
        n, temperature = partial.shape[0], self.temperature
        student_exps, teacher_exps = (buffer[:n] for buffer in buffers[:2])
        student_log_z, teacher_log_z = statistics[1], statistics[3]
        if weights is None:
            # T / Z_s (e_s - e_t Z_s / Z_t): exactly 0 where the student is the teacher, and `partial`, a chunk of a
            # fresh gradient, written once.
            teacher_exps.mul_(torch.exp(student_log_z - teacher_log_z).unsqueeze(-1))
            scale = temperature * torch.exp(-student_log_z)
            torch.sub(student_exps, teacher_exps, out=partial).mul_(scale.unsqueeze(-1))
            return
        weights = weights * temperature
        student_scale = (weights * torch.exp(-student_log_z)).unsqueeze(-1)  # w T / Z_s
        if temperature == 1.0:  # (w T / Z_s + c) e_s
            torch.mul(student_exps, student_scale + softmax_scale.unsqueeze(-1), out=partial)
        else:  # (w T / Z_s + c e_s) e_s at T = 2
            torch.mul(student_exps, softmax_scale.unsqueeze(-1), out=partial).add_(student_scale).mul_(student_exps)
        partial.addcmul_(teacher_exps, (-weights * torch.exp(-teacher_log_z)).unsqueeze(-1))

    def gradient(self, student, teachers, statistics, weights, out, buffers, kept=False) -> None:
        if kept:
            out.mul_(weights.unsqueeze(-1))
        else:
            forward_kl_chunk_gradient(student, teachers[0], statistics, weights, self.temperature, out, buffers)

    def untempered_log_z(self, statistics: Tensor, buffers: list[Tensor]) -> Tensor | None:
        r""":math:`\log \sum e^{z - \max z}` of the student at T = 1 `(n,)` after :meth:`values`, where it is at hand:
        at T = 1 in the statistics; at T = 2 from the exponentials :math:`e = e^{(z - \max z) / 2}` left in the
        first buffer, whose squares are :math:`e^{z - \max z}` (a norm instead of a pass of exponentials)."""
        if self.temperature == 1.0:
            return statistics[1]
        if self.temperature == 2.0:
            return log_sum_of_squares(buffers[0][: statistics.shape[1]])
        return None


@dataclass(frozen=True)
class TopKBucketKLKernel:
    r"""The forward KL against a top-k teacher completed by the student's tail (`tail="bucket"` of
    :func:`~hf_distill.losses.topk_soft_target_loss`), by hand, as a :class:`~hf_distill.losses.chunks.ChunkKernel`.

    With K the cached classes and their log-probabilities v at T = 1, the completed teacher is
    :math:`\hat u_j = v_j` on K and :math:`\hat u_j = z_j - \mathrm{lse}(z) + c` outside it, with
    :math:`c = \log m_t - \log m_s` (the teacher's and the student's mass outside K). Outside K,
    :math:`\hat u_j / T - z_j / T` is the constant :math:`(c - \mathrm{lse}(z)) / T`, so with
    :math:`\hat p = \mathrm{softmax}(\hat u / T)` and :math:`q = \mathrm{softmax}(z / T)`

    .. math:: \mathrm{KL}(\hat p \| q) = \sum_{j \in K} \hat p_j \frac{v_j - z_j}{T}
        + \hat p(\bar K) \frac{c - \mathrm{lse}(z)}{T} - \mathrm{lse}(\hat u / T) + \mathrm{lse}(z / T),
        \qquad \frac{\partial\, T^2 \mathrm{KL}}{\partial z} = T (q - \hat p), \quad \hat p_j = r \, q_j
        \text{ outside } K

    for a constant r per position: the forward pass takes one exponential per element at T = 1 and 2 (at T = 2 the
    student's sums at T = 1 are those of the squared exponentials) and two at other T, the backward pass one (none
    when the forward pass starts the gradient, `partial`), and neither writes the completed teacher over V. The
    student's sums outside K are taken by zeroing K, not by subtracting, so a top-k holding nearly all the mass loses
    no precision. Chunks with k = V, an empty tail (teacher or student) or a non-finite student row go to
    `reference`, the loss of :func:`~hf_distill.losses.topk_soft_target_loss` per position.
    """

    temperature: float
    reference: PerPositionFn
    num_buffers: int = 1
    num_statistics: int = 5  # the student's max and log Z at T, the teacher's log Z, log r, the student's log Z at 1
    num_values: int = 1
    gradient_in_forward: bool = True

    def values(
        self, student: Tensor, teachers: list[Tensor], buffers: list[Tensor], partial: Tensor | None = None
    ) -> tuple[Tensor, Tensor] | None:
        values, indices = teachers[0].float(), teachers[1].long()
        if indices.shape[-1] == student.shape[-1]:
            return None
        temperature, exps = self.temperature, buffers[0][: student.shape[0]]
        maximum = student.amax(-1).float()
        if temperature == 2.0:  # the sums at T = 1 are those of the squared exponentials at T = 2
            *tempered, log_inside, log_outside = _split_log_sums(student, maximum, indices, 2.0, exps, squares=True)
        else:
            log_inside, log_outside = _split_log_sums(student, maximum, indices, 1.0, exps)  # at T = 1
        log_z = torch.logaddexp(log_inside, log_outside)
        student_tail, teacher_tail = log_outside - log_z, log1mexp(values.logsumexp(-1))  # log m_s, log m_t
        if not torch.isfinite(torch.stack([maximum, student_tail, teacher_tail])).all():
            return None
        if temperature == 1.0:
            tempered = [log_inside, log_outside]
        elif temperature != 2.0:
            tempered = _split_log_sums(student, maximum, indices, temperature, exps)
        tempered_inside, tempered_outside = tempered
        # Work with the student's log-probabilities y = z - lse(z) at T = 1, whose outside-K gap to the completed
        # teacher is c: no sum below mixes terms of the logits' size that cancel.
        tempered_log_z = torch.logaddexp(tempered_inside, tempered_outside)  # lse((z - max z) / T)
        shift = log_z / temperature  # (lse(z) - max z) / T
        tail_gap = (teacher_tail - student_tail) / temperature  # c / T
        log_tail = tempered_outside - shift + tail_gap  # lse of u_hat / T outside K
        teacher_log_z = torch.logaddexp((values / temperature).logsumexp(-1), log_tail)  # lse(u_hat / T)
        teacher_inside = torch.exp(values / temperature - teacher_log_z.unsqueeze(-1))  # p_hat on K
        student_inside = student.gather(-1, indices).float() - (maximum + log_z).unsqueeze(-1)  # y on K
        cross = (teacher_inside * (values - student_inside)).sum(-1) / temperature
        kl = cross + torch.exp(log_tail - teacher_log_z) * tail_gap - teacher_log_z + (tempered_log_z - shift)
        log_ratio = tempered_log_z - shift + tail_gap - teacher_log_z  # log r
        statistics = torch.stack([maximum, tempered_log_z, teacher_log_z, log_ratio, log_z])
        if partial is not None:  # T q (1 - r) outside K from the exponentials of the student's tail, then K
            scale = temperature * -torch.expm1(log_ratio) * torch.exp(-tempered_log_z)
            torch.mul(exps, scale.unsqueeze(-1), out=partial)
            self._scatter_inside(student, values, indices, statistics, torch.full_like(maximum, temperature), partial)
        return kl * temperature**2, statistics

    def gradient(self, student, teachers, statistics, weights, out, buffers, kept=False) -> None:
        if kept:
            out.mul_(weights.unsqueeze(-1))
            return
        values, indices, scale = teachers[0].float(), teachers[1].long(), weights * self.temperature
        maximum, tempered_log_z, _, log_ratio, _ = statistics
        probs = softmax_into(student, maximum, tempered_log_z, self.temperature, out)  # q
        probs.mul_((scale * -torch.expm1(log_ratio)).unsqueeze(-1))  # T w q (1 - r) outside K
        self._scatter_inside(student, values, indices, statistics, scale, probs)

    def _scatter_inside(
        self, student: Tensor, values: Tensor, indices: Tensor, statistics: Tensor, scale: Tensor, out: Tensor
    ) -> None:
        """Write `scale (q - p_hat)` on K into `out` (`scale` `(n,)`: T times the weights)."""
        maximum, tempered_log_z, teacher_log_z, _, _ = statistics
        temperature = self.temperature
        student_inside = student.gather(-1, indices).float() - maximum.unsqueeze(-1)
        student_inside = torch.exp(student_inside / temperature - tempered_log_z.unsqueeze(-1))
        teacher_inside = torch.exp(values / temperature - teacher_log_z.unsqueeze(-1))
        out.scatter_(-1, indices, scale.unsqueeze(-1) * (student_inside - teacher_inside))

    def untempered_log_z(self, statistics: Tensor, buffers: list[Tensor]) -> Tensor:
        r""":math:`\log \sum e^{z - \max z}` of the student at T = 1 `(n,)`: the forward pass takes it at any T."""
        return statistics[4]


def _split_log_sums(
    logits: Tensor, maximum: Tensor, indices: Tensor, temperature: float, exps: Tensor, squares: bool = False
) -> list[Tensor]:
    """The logsumexp of `(z - max z) / T` over the classes in `indices` `(n, k)` and over the others, each `(n,)`;
    with `squares`, then those of the squared exponentials (at T = 2: the sums at T = 1). `exps` `(n, V)` float32 is
    left holding the exponentials outside `indices`, 0 on them."""
    shifted_into(logits, maximum, temperature, exps).exp_()
    inside = exps.gather(-1, indices)
    exps.scatter_(-1, indices, 0.0)
    sums = [inside.sum(-1), exps.sum(-1)]
    logs = [total.log_() for total in sums]
    return logs + [log_sum_of_squares(inside), log_sum_of_squares(exps)] if squares else logs
