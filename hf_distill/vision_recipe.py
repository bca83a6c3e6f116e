"""What the vision recipes share: their arguments, a config-file front end, and the comparison set-up."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser

from .benchmark import image_inputs
from .comparison import ComparisonSetup
from .config import DistillationTrainingArguments
from .image_data import (
    CIFAR10_HUB_ID,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DIGITS,
    build_transforms,
    channel_mean_std,
    check_num_classes,
    load_image_classification,
    subsample,
    with_pixel_transform,
)
from .timm_models import check_model_name, create_image_model, load_image_model, model_display_name, save_image_model


@dataclass
class ImageModelArguments:
    """Teacher and student of a vision recipe (any `timm.list_models()` names)."""

    teacher_model: str = field(default="resnet50", metadata={"help": "timm name of the teacher."})
    student_model: str = field(default="resnet18", metadata={"help": "timm name of the student."})
    teacher_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Trained teacher: a folder saved by a recipe, a trainer checkpoint of --teacher_model, "
            "or a Hub id. Default: <output_dir>/teacher, trained there first if it is not there yet."
        },
    )
    pretrained: bool = field(default=False, metadata={"help": "Start models built by name from timm's weights."})
    cifar_stem: bool = field(default=True, metadata={"help": "Small-image stems for 32x32 inputs."})
    patch_size: int = field(default=4, metadata={"help": "Patch size of ViT/DeiT models with --cifar_stem."})
    teacher_model_kwargs: str | None = field(default=None, metadata={"help": "JSON kwargs for the teacher."})
    student_model_kwargs: str | None = field(default=None, metadata={"help": "JSON kwargs for the student."})


@dataclass
class ImageDataArguments:
    """Dataset and augmentation of a vision recipe."""

    dataset: str = field(
        default=CIFAR10_HUB_ID,
        metadata={"help": f"Hub id, image folder, save_to_disk folder, or '{DIGITS}' (offline sklearn digits)."},
    )
    train_split: str = field(default="train", metadata={"help": "Training split."})
    eval_split: str = field(default="test", metadata={"help": "Eval split (split off the train one if absent)."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: first Image one)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: first ClassLabel)."})
    image_size: int = field(default=32, metadata={"help": "Side of the square model input."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Class-stratified labelled subset."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N eval images."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips when training."})
    crop_padding: int = field(default=4, metadata={"help": "Zero padding of the random crop (0: no crop)."})
    random_affine: float = field(
        default=0.0, metadata={"help": "Strength s of random rotation (15s deg), shift (10s %), scale (15s %)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of dataset splits and subsets."})


def config_to_argv(config: dict[str, Any]) -> list[str]:
    """Command-line options from a config: `{"alpha": 0.9, "seeds": [0, 1], "flag": true}` →
    `["--alpha", "0.9", "--seeds", "0", "1", "--flag", "true"]`."""
    argv: list[str] = []
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        else:
            argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return argv


def parse_recipe_args(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse command-line arguments into `dataclass_types`; a first argument ending in `.json` is a config file.

    Options after the config file override it: `script.py recipes/configs/digits_demo.json --num_train_epochs 1`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(".json"):
        if not os.path.isfile(argv[0]):
            raise ValueError(f"Config file {argv[0]!r} does not exist.")
        with open(argv[0]) as f:
            argv = config_to_argv(json.load(f)) + argv[1:]
    return HfArgumentParser(dataclass_types).parse_args_into_dataclasses(args=argv)


def _kwargs(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _resolve_teacher(
    model_args: ImageModelArguments, data_args: ImageDataArguments, output_dir: str, num_classes: int
):
    """The given or previously trained teacher, checked against the data, or `(None, note)` to train one."""
    path = model_args.teacher_name_or_path
    if path is not None:
        teacher = load_image_model(
            path, num_classes, model_args.teacher_model, model_args.cifar_stem, data_args.image_size
        )
        return teacher, f"Teacher loaded from {path}."
    default_dir = os.path.join(output_dir, "teacher")
    if not os.path.exists(os.path.join(default_dir, "config.json")):
        return None, f"Teacher trained by this run and saved to {default_dir}."
    teacher = load_image_model(default_dir, num_classes)
    saved = teacher.hf_distill_config
    if saved.get("model_name") != model_args.teacher_model or saved.get("dataset") != data_args.dataset:
        raise ValueError(
            f"{default_dir} holds a {saved.get('model_name')} teacher trained on {saved.get('dataset')!r}, not a "
            f"{model_args.teacher_model} on {data_args.dataset!r}; use another --output_dir or delete that folder."
        )
    return teacher, f"Teacher reused from {default_dir} (trained by an earlier run; delete it to retrain)."


def build_vision_setup(
    model_args: ImageModelArguments, data_args: ImageDataArguments, training_args: DistillationTrainingArguments
) -> ComparisonSetup:
    """Load and check data and models, before any training: bad names, paths and label counts raise here."""
    for name in (model_args.teacher_model, model_args.student_model):
        check_model_name(name)
    full = load_image_classification(  # all labelled images: ablations may take other subsets of them
        data_args.dataset,
        data_args.train_split,
        data_args.eval_split,
        data_args.image_column,
        data_args.label_column,
        None,
        data_args.max_eval_samples,
        seed=data_args.split_seed,
    )
    data = full
    if data_args.max_train_samples is not None:
        data = subsample(full, data_args.max_train_samples, data_args.split_seed)
    if data_args.dataset == CIFAR10_HUB_ID:
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        mean, std = channel_mean_std(data.train, data.image_column)
    train_tf = build_transforms(
        data_args.image_size,
        mean,
        std,
        True,
        data_args.crop_padding,
        data_args.horizontal_flip,
        data_args.random_affine,
    )
    eval_tf = build_transforms(data_args.image_size, mean, std, False)

    def make_train_dataset(max_train_samples: int):
        subset = subsample(full, max_train_samples, data_args.split_seed)
        return with_pixel_transform(subset.train, data.image_column, data.label_column, train_tf)

    def make(name: str, kwargs: str | None):
        return lambda: create_image_model(
            name,
            data.num_classes,
            model_args.pretrained,
            data_args.image_size,
            model_args.cifar_stem,
            model_args.patch_size,
            **_kwargs(kwargs),
        )

    make_teacher = make(model_args.teacher_model, model_args.teacher_model_kwargs)
    make_student = make(model_args.student_model, model_args.student_model_kwargs)
    student = make_student()  # built once here so that a bad stem or kwargs fails before training
    teacher, teacher_note = _resolve_teacher(model_args, data_args, training_args.output_dir, data.num_classes)
    reference = teacher if teacher is not None else make_teacher()
    teacher_name = model_display_name(reference)
    check_num_classes(data.num_classes, reference.num_classes, teacher_name)

    def save(model, folder: str) -> None:
        model.hf_distill_config["dataset"] = data_args.dataset
        save_image_model(model, folder, data.class_names)

    notes = [teacher_note]
    if data_args.dataset == DIGITS:
        notes.append("Data: sklearn digits (8×8 images upsampled to 32×32), offline; split fixed by --split_seed.")
    return ComparisonSetup(
        make_teacher=make_teacher,
        make_student=make_student,
        train_dataset=with_pixel_transform(data.train, data.image_column, data.label_column, train_tf),
        eval_dataset=with_pixel_transform(data.eval, data.image_column, data.label_column, eval_tf),
        class_names=data.class_names,
        make_inputs=image_inputs(data_args.image_size),
        teacher_name=teacher_name,
        student_name=model_display_name(student),
        dataset_name=data_args.dataset,
        save_model=save,
        teacher=teacher,
        make_train_dataset=make_train_dataset,
        notes=notes,
    )


def end_distributed() -> None:
    """Destroy the process group of an `accelerate launch` run, so that the processes exit cleanly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
