"""The soft-target term for a teacher known by its cached top-k log-probabilities (an offline top-k cache)."""

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from ..losses import chunked_topk_soft_target_loss, topk_soft_target_loss
from .base import DistillationBatch, TermLoss


@dataclass
class TopKTeacherOutputs:
    """A top-k teacher cache's batch: what the trainer puts in `DistillationBatch.teacher_outputs`.

    Attributes:
        values: `(..., k)` the teacher's log-probabilities at T = 1 of its k most likely classes.
        indices: `(..., k)` their class ids.
        tail: how the loss treats the classes outside the top k (`"bucket"` or `"renormalize"`; see
            :func:`hf_distill.losses.topk_soft_target_loss`).
    """

    values: Tensor
    indices: Tensor
    tail: str = "bucket"

    @property
    def k(self) -> int:
        return self.values.shape[-1]

    @cached_property
    def max_index(self) -> int:
        """The largest cached class id (-1 for none): read from the device once per batch, by whichever needs it
        first (:meth:`check_classes`, which the trainer calls, and :func:`topk_support`)."""
        return int(self.indices.max()) if self.indices.numel() else -1

    def check_classes(self, num_classes: int) -> None:
        """Refuse cached class ids beyond the student's `num_classes`."""
        if self.max_index >= num_classes:
            raise ValueError(
                f"The cached top-k holds class id {self.max_index}, the student has {num_classes} classes: "
                "the cache was built with another vocabulary or label set."
            )

    def logits(self, num_classes: int) -> Tensor:
        """`(..., num_classes)` log-probabilities, `-inf` outside the top k; its argmax is the teacher's top-1. The
        trainer's terms take the cached values and ids themselves (:func:`topk_support`); a batch forms this only for
        a term that reads its `teacher_logits` (see :class:`~hf_distill.terms.DistillationBatch`)."""
        self.check_classes(num_classes)
        dense = torch.full((*self.values.shape[:-1], num_classes), -math.inf, device=self.values.device)
        return dense.scatter_(-1, self.indices.long(), self.values.float())


def topk_support(batch: DistillationBatch) -> tuple[Tensor, Tensor]:
    """The cached top-k `(values, indices)` `(..., k)` of a top-k batch, at the positions of its logits (which the
    causal shift keeps)."""
    topk: TopKTeacherOutputs = batch.teacher_topk
    if topk.max_index >= batch.student_logits.shape[-1]:
        # The logits were cut to the vocabulary both models share (`compared_vocab_size`), and the cache holds ids
        # beyond it: the top k of what remains of the teacher's logits (those ids at -inf).
        return batch.teacher_logits.topk(topk.k, dim=-1)
    return topk.values, topk.indices


def teacher_top1(batch: DistillationBatch) -> Tensor:
    """`(...)` the teacher's most likely class at each position: the argmax of its logits, or of a top-k batch's
    cached support (of tied classes the lowest id, as `argmax` of the logits gives)."""
    if batch.teacher_topk is None:
        return batch.teacher_logits.argmax(-1)
    values, indices = topk_support(batch)
    largest = values == values.amax(-1, keepdim=True)
    return indices.masked_fill(~largest, torch.iinfo(indices.dtype).max).amin(-1)


def topk_soft_term_loss(term, batch: DistillationBatch, chunked: bool = False) -> TermLoss:
    """The soft term (:class:`~hf_distill.terms.SoftTargetTerm` `term`: its temperature and divergence) on a top-k
    batch: :func:`hf_distill.losses.topk_soft_target_loss` per position, over the aligned (shifted) positions, with
    `chunked` through :func:`hf_distill.losses.chunked_topk_soft_target_loss` (`term.chunk_size` positions)."""
    topk: TopKTeacherOutputs = batch.teacher_topk
    if term.standardize:
        raise ValueError("Logit standardization needs the teacher's full logits; a top-k cache holds k of them.")
    values, indices = topk_support(batch)
    loss = chunked_topk_soft_target_loss if chunked else topk_soft_target_loss
    kwargs = {"chunk_size": term.chunk_size or None} if chunked else {}
    per_position = loss(
        batch.student_logits,
        values,
        indices,
        term.temperature,
        mask=batch.soft_mask if chunked else None,  # chunks outside the mask are skipped; the reduction drops them
        reduction="none",
        tail=topk.tail,
        divergence=term.divergence,
        jsd_beta=term.jsd_beta,
        **kwargs,
    )
    if batch.soft_mask is None:
        return TermLoss(per_position, None, "examples" if per_position.dim() == 1 else "batch")
    return TermLoss(per_position, batch.soft_mask, "labels" if batch.labels is not None else "batch")
