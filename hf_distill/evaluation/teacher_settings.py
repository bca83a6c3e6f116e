"""What a recipe's teacher was trained with: recorded beside the saved teacher, compared before it is reused."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import TrainingArguments

SETTINGS_NAME = "teacher_settings.json"
NOT_RECORDED = "not recorded"


def training_settings(args: TrainingArguments) -> dict[str, Any]:
    """The arguments of a teacher's own training run that shape its weights, named as on the command line.

    `global_batch_size` counts every process, so a run on two processes with half the per-device batch matches.
    """
    value = lambda option: getattr(option, "value", option)  # noqa: E731 - enums as their command-line strings
    return {
        "teacher_epochs": args.num_train_epochs if args.max_steps <= 0 else None,
        "max_steps": args.max_steps if args.max_steps > 0 else None,
        "teacher_learning_rate": args.learning_rate,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "optim": value(args.optim),
        "weight_decay": args.weight_decay,
        "lr_scheduler_type": value(args.lr_scheduler_type),
        "warmup_steps": args.warmup_steps,
        "seed": args.seed,
        "data_seed": args.data_seed,
    }


def save_teacher_settings(folder: str, settings: dict[str, Any]) -> None:
    """Write `settings` to `folder/teacher_settings.json`, next to the teacher's weights."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, SETTINGS_NAME), "w") as f:
        json.dump(settings, f, indent=2)


def load_teacher_settings(folder: str) -> dict[str, Any] | None:
    """The settings recorded in `folder` by `save_teacher_settings`; `None` for a Hub id or a folder without them."""
    path = os.path.join(os.path.expanduser(folder), SETTINGS_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def settings_differences(recorded: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{key: (recorded value, current value)}` for every key whose values differ; absent keys are `NOT_RECORDED`."""
    recorded = recorded or {}
    current = json.loads(json.dumps(current))  # as it would read back from the file: tuples are lists
    keys = [*current, *(key for key in recorded if key not in current)]
    differences = {}
    for key in keys:
        old, new = recorded.get(key, NOT_RECORDED), current.get(key, NOT_RECORDED)
        if old != new:
            differences[key] = (old, new)
    return differences


def format_differences(differences: dict[str, tuple[Any, Any]], old: str, new: str) -> str:
    """`"teacher_epochs: 1.0 (saved) vs 2.0 (this run); seed: ..."` with `old` / `new` naming the two sides."""
    show = lambda value: value if value == NOT_RECORDED else repr(value)  # noqa: E731
    return "; ".join(f"{key}: {show(a)} ({old}) vs {show(b)} ({new})" for key, (a, b) in differences.items())


def check_reusable(folder: str, current: dict[str, Any], reuse_option: str) -> dict[str, Any]:
    """The settings recorded in `folder`, if they equal `current`, the settings this run would train a teacher with.

    Raises:
        ValueError: before any training, listing every setting that differs (saved value vs this run's) and what to
            do: delete the folder, use another `--output_dir`, or pass `reuse_option` to reuse the teacher as it is.
    """
    recorded = load_teacher_settings(folder)
    differences = settings_differences(recorded, current)
    if not differences:
        return recorded
    if recorded is None:
        problem = f"{folder} holds a teacher saved without its settings ({SETTINGS_NAME}), so it cannot be checked"
    else:
        problem = (
            f"{folder} holds a teacher trained by an earlier run with other settings than this run's: "
            f"{format_differences(differences, 'saved', 'this run')}"
        )
    raise ValueError(
        f"{problem}. Delete that folder to train a new teacher, use another --output_dir, or pass {reuse_option} "
        f"{folder} to reuse that teacher as it is (the report then states its saved settings)."
    )


def describe_settings(settings: dict[str, Any] | None) -> str:
    """`"teacher_epochs=1.0, seed=0, ..."` for reports, leaving out unset values; `"not recorded"` for `None`."""
    if not settings:
        return NOT_RECORDED
    return ", ".join(f"{key}={value}" for key, value in settings.items() if value is not None)
