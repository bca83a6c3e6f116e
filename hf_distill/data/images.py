"""Image-classification datasets for the vision recipes: CIFAR-10 from the Hub, local folders, offline digits."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset, load_from_disk
from torchvision import transforms as T

CIFAR10_HUB_ID = "uoft-cs/cifar10"
DIGITS = "digits"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ImageClassificationData:
    """A train / eval pair of raw image datasets and what is needed to turn them into batches.

    Attributes:
        name: the dataset name or path it was loaded from.
        train, eval: `datasets.Dataset`s with an image column and an integer label column.
        image_column, label_column: the names of those columns.
        class_names: one name per class index; `len(class_names)` is the number of classes.
    """

    name: str
    train: Dataset
    eval: Dataset
    image_column: str
    label_column: str
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_digits_dataset(image_size: int = 32, test_size: float = 0.25, seed: int = 0) -> DatasetDict:
    """The 8×8 `sklearn.datasets.load_digits` images (1797, 10 classes), upsampled to RGB `image_size`².

    Pixel values 0..16 are scaled to 0..255 and resized bilinearly; the split is stratified with
    `seed`, so the same call always gives the same train / test images. Needs no network.
    """
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # (N, 8, 8)
    images = [
        PILImage.fromarray(p, mode="L").resize((image_size, image_size), PILImage.BILINEAR).convert("RGB")
        for p in pixels
    ]
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=test_size, random_state=seed, stratify=digits.target
    )
    features = Features({"img": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})

    def subset(idx: np.ndarray) -> Dataset:
        return Dataset.from_dict(
            {"img": [images[i] for i in idx], "label": [int(digits.target[i]) for i in idx]}, features=features
        )

    return DatasetDict(train=subset(idx_train), test=subset(idx_test))


def _looks_like_path(name: str) -> bool:
    """A Hub id is `name` or `owner/name`; anything else (absolute, relative, `~`, deeper) is a local path."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or name.endswith("/")


def _load_raw(name: str, test_size: float, seed: int, cache_dir: str | None) -> DatasetDict:
    """Load `name` as a `DatasetDict`: the digits set, a `save_to_disk` folder, an image folder or a Hub id."""
    if name == DIGITS:
        return load_digits_dataset(test_size=test_size, seed=seed)
    path = os.path.expanduser(name)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(
                f"Dataset path {name!r} is a file; expected a folder of images or a `save_to_disk` folder."
            )
        if any(os.path.exists(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")):
            loaded = load_from_disk(path)
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict(train=loaded)
        return load_dataset("imagefolder", data_dir=path, cache_dir=cache_dir)
    if _looks_like_path(name):
        raise ValueError(f"Dataset path {name!r} does not exist (give a folder, a Hub dataset id or {DIGITS!r}).")
    return load_dataset(name, cache_dir=cache_dir)


def _find_columns(ds: Dataset, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """Pick the image column (first `Image` feature) and the label column (first `ClassLabel`) unless given."""
    columns = list(ds.features)
    image_column = image_column or next((c for c in columns if isinstance(ds.features[c], Image)), None)
    label_column = label_column or next((c for c in columns if isinstance(ds.features[c], ClassLabel)), None)
    if label_column is None and "label" in columns:
        label_column = "label"
    for kind, col in (("image", image_column), ("label", label_column)):
        if col is None or col not in columns:
            raise ValueError(f"No {kind} column {col!r} in the dataset; its columns are {columns}.")
    return image_column, label_column


def load_image_classification(
    name: str = CIFAR10_HUB_ID,
    train_split: str = "train",
    eval_split: str = "test",
    image_column: str | None = None,
    label_column: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    test_size: float = 0.25,
    seed: int = 0,
    cache_dir: str | None = None,
) -> ImageClassificationData:
    """Load an image-classification dataset and check its labels.

    `name` is `"digits"` (offline), a local image folder (`class_name/xxx.png`), a `save_to_disk` folder or a
    Hub id (default CIFAR-10). Without `eval_split`, the train split is divided with `test_size` and `seed`.
    `max_train_samples` keeps a class-stratified subset (fewer labelled examples), fixed by `seed`.

    Raises:
        ValueError: missing path, missing split or column, labels outside `0..num_classes-1`.
    """
    raw = _load_raw(name, test_size, seed, cache_dir)
    if train_split not in raw:
        raise ValueError(f"Dataset {name!r} has no split {train_split!r}; its splits are {list(raw)}.")
    train = raw[train_split]
    if eval_split in raw:
        evaluation = raw[eval_split]
    else:
        parts = train.train_test_split(test_size=test_size, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    image_column, label_column = _find_columns(train, image_column, label_column)
    feature = train.features[label_column]
    if isinstance(feature, ClassLabel):
        class_names = list(feature.names)
    else:
        class_names = [str(c) for c in range(int(max(train[label_column])) + 1)]
    for split, ds in (("train", train), ("eval", evaluation)):
        labels = np.asarray(ds[label_column])
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(
                f"{split} labels of {name!r} span {labels.min()}..{labels.max()}, outside 0..{len(class_names) - 1}."
            )
    if max_train_samples is not None and max_train_samples < len(train):
        train = stratified_subset(train, label_column, max_train_samples, seed)
    if max_eval_samples is not None and max_eval_samples < len(evaluation):
        evaluation = evaluation.select(range(max_eval_samples))
    return ImageClassificationData(name, train, evaluation, image_column, label_column, class_names)


def stratified_subset(ds: Dataset, label_column: str, n: int, seed: int = 0) -> Dataset:
    """`n` rows of `ds` with the class proportions of `ds` (at least one per class present), fixed by `seed`."""
    labels = np.asarray(ds[label_column])
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts / counts.sum() * n
    per_class = np.maximum(1, np.floor(quota)).astype(int)
    for c in np.argsort(per_class - quota)[: max(0, n - per_class.sum())]:  # largest remainders round up
        per_class[c] += 1
    keep = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class, strict=True)]
    return ds.select(sorted(np.concatenate(keep).tolist()))


def check_num_classes(data_classes: int, model_classes: int, model_name: str) -> None:
    """Raise a `ValueError` when a model's output size does not match the dataset's number of classes."""
    if data_classes != model_classes:
        raise ValueError(
            f"Model {model_name!r} predicts {model_classes} classes but the dataset has {data_classes}; "
            "use a model (or checkpoint) built for this dataset's labels."
        )


def channel_mean_std(ds: Dataset, image_column: str, max_images: int = 2000) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and std of the RGB pixels (scaled to 0..1) of up to `max_images` images of `ds`."""
    n = min(len(ds), max_images)
    pixels = np.stack([np.asarray(ds[i][image_column].convert("RGB"), dtype=np.float64) / 255.0 for i in range(n)])
    return tuple(pixels.mean(axis=(0, 1, 2)).tolist()), tuple(pixels.std(axis=(0, 1, 2)).tolist())


def build_transforms(
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    train: bool,
    crop_padding: int = 4,
    horizontal_flip: bool = True,
    random_affine: float = 0.0,
) -> Callable[[Any], torch.Tensor]:
    """PIL image → normalised float tensor (3, image_size, image_size).

    Train: resize to `image_size`, then with strength `s = random_affine` > 0 a random rotation of ±15·s degrees,
    shift of ±10·s % and scale of 1 ± 0.15·s (for digits and characters, which flips would corrupt), a random crop
    with `crop_padding` zero padding and an optional horizontal flip. Eval: resize only. Both end with `ToTensor`
    and `Normalize(mean, std)`.
    """
    steps: list[Any] = [T.Resize(image_size), T.CenterCrop(image_size)]
    if train:
        steps += augmentations(image_size, crop_padding, horizontal_flip, random_affine)
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def augmentations(
    image_size: int, crop_padding: int = 4, horizontal_flip: bool = True, random_affine: float = 0.0
) -> list[Any]:
    """The random steps of :func:`build_transforms` in order; each takes a PIL image or a `(3, H, W)` tensor."""
    steps: list[Any] = []
    if random_affine > 0:
        s = random_affine
        steps.append(T.RandomAffine(degrees=15 * s, translate=(0.1 * s,) * 2, scale=(1 - 0.15 * s, 1 + 0.15 * s)))
    if crop_padding > 0:
        steps.append(T.RandomCrop(image_size, padding=crop_padding))
    if horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    return steps


def with_pixel_transform(
    ds: Dataset, image_column: str, label_column: str, transform: Callable[[Any], torch.Tensor]
) -> Dataset:
    """`ds` yielding `{"pixel_values": (3, H, W) tensor, "labels": int}` rows, transformed on the fly.

    The columns are renamed to `pixel_values` / `labels` first (other columns dropped), so that the Trainer's
    unused-column removal keeps them.
    """
    ds = ds.select_columns([image_column, label_column])
    renames = {c: n for c, n in ((image_column, "pixel_values"), (label_column, "labels")) if c != n}
    ds = ds.rename_columns(renames) if renames else ds

    def apply(batch: dict[str, list]) -> dict[str, list]:
        return {
            "pixel_values": [transform(img.convert("RGB")) for img in batch["pixel_values"]],
            "labels": list(batch["labels"]),
        }

    return ds.with_transform(apply)


def prepare_image_datasets(
    data: ImageClassificationData,
    image_size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    crop_padding: int = 4,
    horizontal_flip: bool = True,
) -> tuple[Dataset, Dataset]:
    """Train (augmented) and eval datasets of `{"pixel_values", "labels"}` rows.

    Without `mean` / `std`, they are measured on the training images (CIFAR-10's known values for CIFAR-10).
    """
    if mean is None or std is None:
        if data.name == CIFAR10_HUB_ID:
            mean, std = CIFAR10_MEAN, CIFAR10_STD
        else:
            mean, std = channel_mean_std(data.train, data.image_column)
    train_tf = build_transforms(image_size, mean, std, True, crop_padding, horizontal_flip)
    eval_tf = build_transforms(image_size, mean, std, False)
    return (
        with_pixel_transform(data.train, data.image_column, data.label_column, train_tf),
        with_pixel_transform(data.eval, data.image_column, data.label_column, eval_tf),
    )


def subsample(data: ImageClassificationData, max_train_samples: int, seed: int = 0) -> ImageClassificationData:
    """A copy of `data` with a class-stratified subset of `max_train_samples` training images (all if fewer)."""
    if max_train_samples >= len(data.train):
        return data
    return replace(data, train=stratified_subset(data.train, data.label_column, max_train_samples, seed))
