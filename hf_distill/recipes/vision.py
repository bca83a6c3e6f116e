"""What the vision recipes share: their arguments, a config-file front end, and the comparison set-up."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..config import DistillationTrainingArguments
from ..data.decoded_images import DecodedImageTransform, decode_image_data, with_decoded_transform
from ..data.images import (
    CIFAR10_HUB_ID,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DIGITS,
    augmentations,
    channel_mean_std,
    check_num_classes,
    load_image_classification,
    subsample,
)
from ..evaluation.arguments import ComparisonArguments, ComparisonSetup
from ..evaluation.benchmark import image_inputs
from ..evaluation.teacher_settings import (
    check_reusable,
    format_differences,
    load_teacher_settings,
    settings_differences,
    training_settings,
)
from ..evaluation.training import teacher_arguments
from ..hub.card import is_hub_model_id
from .timm_models import (
    check_model_name,
    create_image_model,
    load_image_model,
    model_display_name,
    model_family,
    save_image_model,
)

TRAINED_HERE = "trained locally by this recipe"


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
        default=0.0, metadata={"help": "Strength s of random rotation (15s deg), shift (10s %%), scale (15s %%)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of dataset splits and subsets."})


def _kwargs(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _teacher_settings(
    model_args: ImageModelArguments,
    data_args: ImageDataArguments,
    training_args: DistillationTrainingArguments,
    comparison_args: ComparisonArguments,
) -> dict[str, Any]:
    """What a teacher trained by this run is trained with: its model, its training data and its own budget."""
    patch_embed = model_family(model_args.teacher_model) == "patch_embed"
    model = {
        "teacher_model": model_args.teacher_model,
        "teacher_model_kwargs": _kwargs(model_args.teacher_model_kwargs),
        "pretrained": model_args.pretrained,
        "cifar_stem": model_args.cifar_stem,
        "patch_size": model_args.patch_size if patch_embed and model_args.cifar_stem else None,
    }
    # every data argument shapes the training images but the number of eval images
    data = {key: value for key, value in dataclasses.asdict(data_args).items() if key != "max_eval_samples"}
    return {**model, **data, **training_settings(teacher_arguments(training_args, comparison_args))}


class _Teacher(NamedTuple):
    model: Any  # None: trained by this run
    settings: dict[str, Any] | None
    origin: str | None
    hub_id: str | None
    note: str


def _resolve_teacher(
    model_args: ImageModelArguments,
    data_args: ImageDataArguments,
    output_dir: str,
    num_classes: int,
    settings: dict[str, Any],
) -> _Teacher:
    """The teacher to distil from, checked against the data and this run's teacher `settings` before any training.

    A given teacher (`--teacher_name_or_path`) is used as it is and reported with its recorded settings. One saved
    to `<output_dir>/teacher` by an earlier run is reused only if it was trained with `settings`; without either,
    the run trains one.
    """
    path = model_args.teacher_name_or_path
    if path is not None:
        teacher = load_image_model(
            path, num_classes, model_args.teacher_model, model_args.cifar_stem, data_args.image_size
        )
        local = os.path.isdir(os.path.expanduser(path))
        recorded = load_teacher_settings(path) if local else None
        hub_id = None if local else path.removeprefix("hf-hub:")
        note = f"Teacher loaded from {path} and used as it is"
        differences = settings_differences(recorded, settings) if recorded is not None else {}
        if recorded is None:
            note += "; the settings it was trained with were not recorded."
        elif differences:  # the arguments of this run that did not shape the teacher
            note += f", unlike this run's arguments: {format_differences(differences, 'teacher', 'this run')}."
        else:
            note += "."
        origin = None if hub_id else (TRAINED_HERE if recorded else "local checkpoint")
        return _Teacher(teacher, recorded, origin, hub_id if is_hub_model_id(hub_id) else None, note)
    default_dir = os.path.join(output_dir, "teacher")
    if not os.path.exists(os.path.join(default_dir, "config.json")):
        return _Teacher(None, settings, TRAINED_HERE, None, f"Teacher trained by this run and saved to {default_dir}.")
    recorded = check_reusable(default_dir, settings, "--teacher_name_or_path")
    teacher = load_image_model(default_dir, num_classes)
    note = f"Teacher reused from {default_dir}: an earlier run trained it with these settings; delete it to retrain."
    return _Teacher(teacher, recorded, TRAINED_HERE, None, note)


def build_vision_setup(
    model_args: ImageModelArguments,
    data_args: ImageDataArguments,
    training_args: DistillationTrainingArguments,
    comparison_args: ComparisonArguments,
) -> ComparisonSetup:
    """Load and check data and models, before any training: bad names, paths, label counts and a saved teacher
    trained with other settings raise here."""
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
    # Decoded once into uint8 pixels; each batch is then cropped, flipped and normalised as tensors (the same views
    # as torchvision's PIL transforms for a seed), so that loading never takes the step's time.
    decoded = decode_image_data(full, data_args.image_size)
    augment = augmentations(
        data_args.image_size, data_args.crop_padding, data_args.horizontal_flip, data_args.random_affine
    )
    train_tf = DecodedImageTransform(data_args.image_size, mean, std, augment)
    eval_tf = DecodedImageTransform(data_args.image_size, mean, std)

    def make_train_dataset(max_train_samples: int):
        # the rows `subsample` picks from the raw images: the labels, and so the stratified draw, are the same
        return with_decoded_transform(subsample(decoded, max_train_samples, data_args.split_seed).train, train_tf)

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
    settings = _teacher_settings(model_args, data_args, training_args, comparison_args)
    teacher = _resolve_teacher(model_args, data_args, training_args.output_dir, data.num_classes, settings)
    reference = teacher.model if teacher.model is not None else make_teacher()
    teacher_name = model_display_name(reference)
    check_num_classes(data.num_classes, reference.num_classes, teacher_name)

    def save(model, folder: str) -> None:
        model.hf_distill_config["dataset"] = data_args.dataset
        save_image_model(model, folder, data.class_names)

    notes = [teacher.note]
    if data_args.dataset == DIGITS:
        notes.append("Data: sklearn digits (8×8 images upsampled to 32×32), offline; split fixed by --split_seed.")
    return ComparisonSetup(
        make_teacher=make_teacher,
        make_student=make_student,
        train_dataset=with_decoded_transform(
            subsample(decoded, data_args.max_train_samples, data_args.split_seed).train
            if data_args.max_train_samples is not None
            else decoded.train,
            train_tf,
        ),
        eval_dataset=with_decoded_transform(decoded.eval, eval_tf),
        class_names=data.class_names,
        make_inputs=image_inputs(data_args.image_size),
        teacher_name=teacher_name,
        student_name=model_display_name(student),
        dataset_name=data_args.dataset,
        save_model=save,
        teacher=teacher.model,
        make_train_dataset=make_train_dataset,
        notes=notes,
        teacher_settings=teacher.settings,
        teacher_origin=teacher.origin,
        teacher_hub_id=teacher.hub_id,
        # trained here or reused with the same settings, data included; a given teacher's data is not known
        teacher_trained_on_train_set=True if model_args.teacher_name_or_path is None else None,
    )
