"""Ablation settings of a comparison: `key=value[,key=value]` strings, their checks, and their summary entries."""

from __future__ import annotations

from typing import Any

from .methods import parse_method
from .statistics import paired_entry

# Keys that change the training data (the teacher is retrained), and keys that leave the student from scratch as is.
DATA_KEYS = ("max_train_samples",)
DISTILLATION_ONLY_KEYS = ("alpha", "temperature", "distillation_loss", "jsd_beta")
# `method=dkd+at`: another distillation method (`methods.py`) for the distilled students of the setting; the
# teacher term's own arguments are chosen through it, never on their own.
METHOD_KEY = "method"
METHOD_ARGUMENTS = ("distillation_method", "logit_standardization")


def parse_setting(setting: str) -> dict[str, Any]:
    """`"alpha=0.5,temperature=8"` → `{"alpha": 0.5, "temperature": 8}` (ints, floats, `true`/`false`, strings)."""
    overrides: dict[str, Any] = {}
    for part in filter(None, setting.split(",")):
        key, sep, raw = part.partition("=")
        if not sep:
            raise ValueError(f"Ablation setting {setting!r}: expected key=value pairs separated by commas.")
        value: Any = raw.strip()
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        if value in ("true", "false"):
            value = value == "true"
        overrides[key.strip()] = value
    return overrides


def check_settings(settings: list[str], argument_names: set[str], can_subsample: bool) -> None:
    """Raise a `ValueError` before any training for keys that are neither training arguments nor data keys."""
    for setting in settings:
        for key, value in parse_setting(setting).items():
            if key == METHOD_KEY:
                parse_method(str(value))
                continue
            if key in METHOD_ARGUMENTS:
                raise ValueError(f"Ablation setting {setting!r}: choose the teacher term with method=..., not {key}.")
            if key not in argument_names and key not in DATA_KEYS:
                raise ValueError(f"Ablation setting {setting!r}: unknown key {key!r}.")
            if key in DATA_KEYS and not can_subsample:
                raise ValueError(f"Ablation setting {setting!r} needs a recipe that can subsample the data.")


def ablation_entry(
    setting: str,
    train_examples: int,
    teacher_accuracy: float,
    runs: dict[str, list[dict[str, Any]]],
    scratch_reused: bool,
    max_steps: int | None = None,
    method: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's entry for one setting: per student role the mean, sample std (ddof=1) and per-seed accuracy,
    and the paired distilled − scratch difference with its 95% t-interval (`statistics.paired_entry`).

    Args:
        runs: role (`student_scratch`, `student_distilled`) → one dict with a `seed` and an `accuracy` per seed.
        scratch_reused: the students from scratch are the main comparison's (the setting only changes the loss).
        max_steps: the optimizer steps of each student run.
        method: the distilled students' method as `DistillationMethod.describe` states it.
    """
    entry: dict[str, Any] = {"setting": setting, "train_examples": train_examples, "teacher": teacher_accuracy}
    entry["max_steps"] = max_steps
    entry["method"] = method
    entry.update(paired_entry(runs))
    entry["student_scratch_reused"] = scratch_reused
    return entry
