"""Where the teacher's outputs come from: a live teacher, loaded, frozen and placed for the run."""

from .live import auto_class_for, check_no_shared_parameters, freeze, load_teacher, prepare_teacher

__all__ = ["auto_class_for", "check_no_shared_parameters", "freeze", "load_teacher", "prepare_teacher"]
