"""Training from an offline teacher cache: the trainer's part (which columns it keeps and how it reads them from a
batch). The trainer checks a cached dataset before its first batch (`teachers.cache_record.check_cache_for_training`).
"""

from typing import Any

from torch import Tensor

from .modeling import CACHED_TEACHER_LOGITS_KEY, CACHED_TEACHER_OUTPUT_KEYS, CACHED_TEACHER_TOPK_VALUES_KEY
from .teachers.augmented_cache import AUGMENTATION_PARAMS_KEY
from .teachers.cache_rows import cached_teacher_rows
from .terms import TopKTeacherOutputs


class CachedTeacherMixin:
    """Mixed into [`DistillationTrainer`]: keeps the cached teacher columns (`teacher_logits`, or
    `teacher_topk_values` and `teacher_topk_indices`) in the batches and takes them out of a batch before the models
    see it."""

    def _pop_cached_teacher(self, inputs: dict[str, Any]) -> Tensor | TopKTeacherOutputs | None:
        """Remove the cached teacher columns from `inputs`: full logits, a top-k batch, or `None`."""
        logits = inputs.pop(CACHED_TEACHER_LOGITS_KEY, None)
        if CACHED_TEACHER_TOPK_VALUES_KEY not in inputs:
            return logits
        values, indices = (inputs.pop(key) for key in CACHED_TEACHER_OUTPUT_KEYS[1:])
        return TopKTeacherOutputs(values, indices, self.args.topk_tail)

    @staticmethod
    def _has_cached_teacher(inputs: dict[str, Any]) -> bool:
        return not inputs.keys().isdisjoint(CACHED_TEACHER_OUTPUT_KEYS)

    def _remove_unused_columns(self, dataset: Any, description: str | None = None) -> Any:
        """The Trainer's removal of unused columns; a cache's teacher columns are then read as views of their Arrow
        buffers (:class:`~hf_distill.teachers.cache_rows.CachedTeacherRows`), not as Python lists."""
        return cached_teacher_rows(super()._remove_unused_columns(dataset, description))

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            kept = (*CACHED_TEACHER_OUTPUT_KEYS, AUGMENTATION_PARAMS_KEY)  # the last replayed by the data collator
            self._signature_columns.extend(key for key in kept if key not in self._signature_columns)
