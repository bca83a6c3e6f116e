"""Where the teacher's outputs come from: a live teacher, loaded, frozen and placed for the run; several; or an
offline cache of its outputs."""

from .augmented_cache import CropFlip, ReplayAugmentationCollator, cache_augmented_teacher_outputs
from .cache import cache_size, cache_teacher_outputs, merge_cache_shards
from .cache_columns import CachedTeacherCollator, cached_teacher_collator
from .cache_record import CacheRecord, TeacherCacheMismatchError, check_teacher_cache, read_cache_record
from .ensemble import (
    TeacherEnsemble,
    TeacherRoutingCollator,
    check_teacher_settings,
    mixture_logits,
    prepare_teachers,
    routing_collator,
    teacher_members,
)
from .live import auto_class_for, check_no_shared_parameters, freeze, load_teacher, prepare_teacher

__all__ = [
    "CacheRecord",
    "CachedTeacherCollator",
    "CropFlip",
    "ReplayAugmentationCollator",
    "TeacherCacheMismatchError",
    "TeacherEnsemble",
    "TeacherRoutingCollator",
    "auto_class_for",
    "cache_augmented_teacher_outputs",
    "cache_size",
    "cache_teacher_outputs",
    "cached_teacher_collator",
    "check_no_shared_parameters",
    "check_teacher_cache",
    "check_teacher_settings",
    "freeze",
    "load_teacher",
    "merge_cache_shards",
    "mixture_logits",
    "prepare_teacher",
    "prepare_teachers",
    "read_cache_record",
    "routing_collator",
    "teacher_members",
]
