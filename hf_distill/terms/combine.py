"""From model outputs to one loss: aligning a batch position by position, and the normalised weighted sum of terms."""

from typing import Any

import torch
from torch import Tensor

from ..losses import IGNORE_INDEX, check_logit_shapes, reduce_loss, soft_loss_mask
from .base import DistillationBatch, LossTerm
from .logits import share_soft_and_hard
from .topk import TopKTeacherOutputs


def align_batch(
    inputs: dict[str, Any],
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor | None,
    student_outputs: Any = None,
    teacher_outputs: Any = None,
    shift_labels: bool = False,
    vocab_size: int | None = None,
) -> DistillationBatch:
    """Check the logit shapes, apply the causal-LM shift and build the label and soft-loss masks.

    Args:
        inputs: the batch as given to the student (without labels or cached teacher logits).
        student_logits: `(B, C)` or `(B, L, V)`.
        teacher_logits: same shape, or `None` (no teacher, or a top-k cache's batch given as `teacher_outputs`).
        teacher_outputs: the teacher's raw output; a :class:`~hf_distill.terms.TopKTeacherOutputs` becomes the batch's
            `teacher_topk`, its positions those of the student's logits.
        labels: `(B,)` or `(B, L)` with -100 where ignored, or `None`.
        shift_labels: causal LMs, whose logits at position i predict the token at i + 1: the labels (and the
            attention mask) are shifted left, the last position masked out; the logits keep their length.
        vocab_size: compare both logits over their first `vocab_size` columns only, the ids of a tokenizer both
            models pad beyond (see `hf_distill.vocabularies.compared_vocab_size`); `None` to use them whole.
    """
    teacher_topk = teacher_outputs if isinstance(teacher_outputs, TopKTeacherOutputs) else None
    if vocab_size is not None and (teacher_logits is not None or teacher_topk is not None):
        student_logits = student_logits[..., :vocab_size]
        teacher_logits = teacher_logits[..., :vocab_size] if teacher_logits is not None else None
    if teacher_logits is not None:
        check_logit_shapes(student_logits, teacher_logits)
    if teacher_topk is not None and teacher_topk.values.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"The cached top-k of shape {tuple(teacher_topk.values.shape)} does not match student logits of shape "
            f"{tuple(student_logits.shape)}: the cache holds other positions than the student's batch."
        )
    attention_mask = inputs.get("attention_mask") if student_logits.dim() == 3 else None
    if shift_labels and student_logits.dim() == 3:
        # The logits stay whole and the labels move: position i is scored on the token at i + 1, and the last
        # position, which predicts nothing, is masked out. (Slicing the logits to `[:, :-1]` would give the same
        # loss, but its backward pass writes one more logits-sized gradient before copying it into the whole.)
        labels = _shift_left(labels, IGNORE_INDEX) if labels is not None else None
        if attention_mask is None and labels is None:
            attention_mask = torch.ones(student_logits.shape[:-1], dtype=torch.long, device=student_logits.device)
        attention_mask = _shift_left(attention_mask, 0) if attention_mask is not None else None
    if labels is not None:
        mask = labels != IGNORE_INDEX
    else:
        mask = attention_mask.bool() if attention_mask is not None else None
    soft_mask = soft_loss_mask(student_logits, labels) if labels is not None else mask
    return DistillationBatch(
        inputs,
        student_logits,
        teacher_logits,
        labels,
        mask,
        soft_mask,
        student_outputs,
        teacher_outputs,
        teacher_topk=teacher_topk,
    )


def _shift_left(values: Tensor, fill: int) -> Tensor:
    """`values[..., 1:]` followed by `fill`: the same shape, each position holding its successor's value."""
    return torch.cat([values[..., 1:], values.new_full((*values.shape[:-1], 1), fill)], dim=-1)


def check_term_names(terms: list[LossTerm]) -> None:
    """Refuse two terms of the same name: each is logged as `<name>_loss`, and one would hide the other."""
    names = [term.name for term in terms]
    if len(set(names)) != len(names):
        raise ValueError(f"Loss terms are logged by name, which must be distinct; got {names}.")


def can_compute(term: LossTerm, batch: DistillationBatch, training: bool = True) -> bool:
    """Whether the batch has what `term` needs; an error if it has not and the term has a non-zero weight.

    Evaluation skips a term that lacks only labels, so that unlabelled evaluation data reports the soft loss.
    """
    missing_teacher = getattr(term, "needs_teacher", True) and not batch.has_teacher
    missing_labels = getattr(term, "needs_labels", False) and batch.labels is None
    tolerated = missing_labels and not missing_teacher and not training
    if (missing_teacher or missing_labels) and term.weight != 0 and not tolerated:
        missing = [
            *(["teacher outputs (pass teacher_model, or a teacher_logits column)"] if missing_teacher else []),
            *(["`labels` (give labels, or set alpha=1.0)"] if missing_labels else []),
        ]
        raise ValueError(
            f"The {term.name} loss has weight {term.weight}, but there are no {' and no '.join(missing)}."
        )
    return not (missing_teacher or missing_labels)


def weighted_sum(
    terms: list[LossTerm],
    batch: DistillationBatch,
    denominators: dict[str, Tensor | int | None] | None = None,
    accumulation_steps: int = 1,
    process_scale: int = 1,
    training: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted sum of the terms, normalised so that gradient accumulation and several processes are exact.

    Without `denominators` every term is its mean over the batch. With them (training, the Trainer having counted the
    accumulated batch), a term whose `normalizer` has a denominator (`"labels"`: all labelled positions of the
    accumulated batch on all processes; `"examples"`: all its examples) is its sum divided by it; any other term is
    its per-batch mean divided by the accumulation steps and `process_scale`. The total is multiplied by
    `process_scale`, the number of processes whose gradients DDP averages while the denominators count them all.

    Returns:
        `(loss, means)`: the scalar loss and each term's mean over this batch (detached), keyed `<name>_loss`.
    """
    total = torch.zeros((), device=batch.student_logits.device)
    means: dict[str, Tensor] = {}

    def divisor(mask: Tensor | None, numel: int, normalizer: str) -> Tensor:
        """What the masked sum of a term with this mask, size and normalizer is divided by."""
        count = torch.as_tensor(mask.sum() if mask is not None else numel, device=total.device)
        if denominators is None:
            return torch.clamp_min(count, 1)
        if denominators.get(normalizer) is not None:
            # An accumulated batch may hold no labelled position at all (a transfer set): its sum is then 0.
            return torch.clamp_min(torch.as_tensor(denominators[normalizer], device=total.device), 1)
        return torch.clamp_min(count, 1) * (accumulation_steps * process_scale)

    def unit_weights(mask: Tensor | None, shape: torch.Size, normalizer: str) -> Tensor:
        """The gradient of the loss w.r.t. each value `shape` of a term of weight 1 with this mask and normalizer."""
        scale = process_scale / divisor(mask, shape.numel(), normalizer)
        return scale.expand(shape) if mask is None else scale * mask

    share_soft_and_hard(terms, batch, unit_weights)
    for term in terms:
        if not can_compute(term, batch, training):
            continue
        result = term(batch)
        masked_sum = reduce_loss(result.per_position, result.mask, "sum")
        count = result.mask.sum() if result.mask is not None else result.per_position.numel()
        mean = masked_sum / torch.clamp_min(torch.as_tensor(count, device=masked_sum.device), 1)
        means[f"{term.name}_loss"] = mean.detach()
        if term.weight != 0:
            divided = masked_sum / divisor(result.mask, result.per_position.numel(), result.normalizer)
            total = total + term.weight * divided
    return total * process_scale, means
