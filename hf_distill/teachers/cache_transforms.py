"""Why a per-example teacher cache refuses datasets with on-the-fly transforms.

A cache holds one teacher output per example. A transform set with `Dataset.set_transform` / `with_transform` (the
recipes' image pipelines: random crops and flips) runs anew at every access, so the student would see other views
than the one the teacher's cached output belongs to, and learn from targets that do not describe its input. A
transform's randomness cannot be read off a function, so every such transform is refused; deterministic
preprocessing belongs in `Dataset.map` (whose result is cached with the rows), and augmentation with a cached
teacher needs the outputs of each augmentation draw cached with its parameters (FKD, Shen & Xing, 2022):
:func:`hf_distill.teachers.cache_augmented_teacher_outputs`.
"""

from typing import Any


def check_no_random_transform(dataset: Any) -> None:
    """Raise if `dataset` carries an on-the-fly transform (`set_transform` / `with_transform`); see the module doc."""
    data_format = getattr(dataset, "format", None) or {}
    if data_format.get("type") == "custom" or data_format.get("format_kwargs", {}).get("transform") is not None:
        transform = data_format.get("format_kwargs", {}).get("transform")
        name = getattr(transform, "__qualname__", type(transform).__name__)
        raise ValueError(
            f"The dataset has an on-the-fly transform ({name}, set by set_transform / with_transform). A teacher "
            "cache holds one output per example, and a transform that runs at every access, if random (crops, flips), "
            "shows the student other views than the teacher saw. Apply deterministic preprocessing with "
            "Dataset.map and cache that dataset; for random crops and flips, cache recorded draws with "
            "hf_distill.teachers.cache_augmented_teacher_outputs, or keep them for online distillation."
        )
