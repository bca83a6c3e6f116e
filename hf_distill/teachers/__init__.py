"""Where the teacher's outputs come from: a live teacher, loaded, frozen and placed for the run; or several."""

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
    "TeacherEnsemble",
    "TeacherRoutingCollator",
    "auto_class_for",
    "check_no_shared_parameters",
    "check_teacher_settings",
    "freeze",
    "load_teacher",
    "mixture_logits",
    "prepare_teacher",
    "prepare_teachers",
    "routing_collator",
    "teacher_members",
]
