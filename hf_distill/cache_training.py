"""Training from an offline teacher cache: the trainer's part (which columns it keeps, how it reads them from a batch,
and the check of a cached dataset before its first batch)."""

from typing import Any

from torch import Tensor

from .modeling import CACHED_TEACHER_LOGITS_KEY, CACHED_TEACHER_OUTPUT_KEYS, CACHED_TEACHER_TOPK_VALUES_KEY
from .teachers.augmented_cache import AUGMENTATION_PARAMS_KEY
from .teachers.cache_record import check_cache_for_training
from .terms import TopKTeacherOutputs


class CachedTeacherMixin:
    """Mixed into [`DistillationTrainer`]: keeps the cached teacher columns (`teacher_logits`, or
    `teacher_topk_values` and `teacher_topk_indices`) in the batches, takes them out of a batch before the models
    see it, and checks a dataset that is a teacher cache (:func:`hf_distill.teachers.cache_record.
    check_cache_for_training`) before its first batch, with the trainer's teacher if it has one."""

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

    @staticmethod
    def _cached_topk_logits(teacher_logits: Tensor | None, teacher_outputs: Any, student_logits: Tensor) -> Any:
        """For a top-k batch, its `(..., V)` logits at the student's number of classes (see
        :meth:`TopKTeacherOutputs.logits`); any other teacher's logits as they are."""
        if isinstance(teacher_outputs, TopKTeacherOutputs):
            return teacher_outputs.logits(student_logits.shape[-1])
        return teacher_logits

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            kept = (*CACHED_TEACHER_OUTPUT_KEYS, AUGMENTATION_PARAMS_KEY)  # the last replayed by the data collator
            self._signature_columns.extend(key for key in kept if key not in self._signature_columns)

    def _check_cache_once(self, dataset: Any) -> None:
        checked = self.__dict__.setdefault("_checked_caches", set())
        if dataset is not None and id(dataset) not in checked:
            check_cache_for_training(dataset, self.teacher_model, self.args)
            checked.add(id(dataset))

    def get_train_dataloader(self):
        self._check_cache_once(self.train_dataset)
        return super().get_train_dataloader()

    def get_eval_dataloader(self, eval_dataset=None):
        if not isinstance(eval_dataset, str):
            self._check_cache_once(eval_dataset if eval_dataset is not None else self.eval_dataset)
        return super().get_eval_dataloader(eval_dataset)
