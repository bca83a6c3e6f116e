"""A teacher cache under random augmentation: several recorded draws per image, replayed exactly in training (FKD).

A per-example cache is wrong when the student sees random crops and flips: the cached output describes another view.
Following FKD (Shen & Xing, "A Fast Knowledge Distillation Framework for Visual Recognition", ECCV 2022,
https://arxiv.org/abs/2112.01528), :func:`cache_augmented_teacher_outputs` draws `draws` crop-and-flip parameters
per image, stores them in an `augmentation_params` column (`[top, left, flip]`) next to the teacher's outputs for
exactly that view, one row per draw, and :class:`ReplayAugmentationCollator` rebuilds the same view from the stored
parameters when the student trains: the student sees the view whose teacher output it is given. An epoch over the
cache goes through every draw of every image once.
"""

from dataclasses import dataclass
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import default_data_collator

from .cache import cache_teacher_outputs

AUGMENTATION_PARAMS_KEY = "augmentation_params"


@dataclass(frozen=True)
class CropFlip:
    """Random crop of `size` from the image zero-padded by `padding` on each side, and a horizontal flip with
    probability `flip_probability`: the CIFAR-style augmentation of the image recipes, on `(C, H, W)` tensors."""

    size: int
    padding: int = 4
    flip_probability: float = 0.5

    def sample(self, generator: torch.Generator, height: int, width: int) -> list[int]:
        """One draw's parameters `[top, left, flip]` for an image of `height` x `width`."""
        free_h, free_w = height + 2 * self.padding - self.size, width + 2 * self.padding - self.size
        if min(free_h, free_w) < 0:
            raise ValueError(f"Crop size {self.size} exceeds the padded image ({height} x {width}, +{self.padding}).")
        top = int(torch.randint(free_h + 1, (1,), generator=generator))
        left = int(torch.randint(free_w + 1, (1,), generator=generator))
        flip = int(torch.rand((), generator=generator) < self.flip_probability)
        return [top, left, flip]

    def apply(self, image: Tensor, params: Any) -> Tensor:
        """The view of `image` `(C, H, W)` for the parameters `[top, left, flip]` of :meth:`sample`."""
        top, left, flip = (int(value) for value in params)
        padded = F.pad(image, [self.padding] * 4)
        view = padded[..., top : top + self.size, left : left + self.size]
        return view.flip(-1) if flip else view


@dataclass
class ReplayAugmentationCollator:
    """Collates rows of an augmented cache: each row's image becomes the view its `augmentation_params` describe,
    then `collator` (default: `transformers.default_data_collator`) collates the rows without the parameters.

    Use it as the trainer's `data_collator` on the cache (the trainer keeps the parameter column in its batches)."""

    augmentation: CropFlip
    image_column: str = "pixel_values"
    collator: Any = default_data_collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        views = []
        for feature in features:
            if AUGMENTATION_PARAMS_KEY not in feature:
                raise ValueError(f"The row has no {AUGMENTATION_PARAMS_KEY!r} column to replay its augmentation from.")
            view = self.augmentation.apply(
                torch.as_tensor(feature[self.image_column]), feature[AUGMENTATION_PARAMS_KEY]
            )
            rest = {k: v for k, v in feature.items() if k not in (self.image_column, AUGMENTATION_PARAMS_KEY)}
            views.append({**rest, self.image_column: view})
        return self.collator(views)


def cache_augmented_teacher_outputs(
    teacher: nn.Module,
    dataset: datasets.Dataset,
    augmentation: CropFlip,
    draws: int,
    image_column: str = "pixel_values",
    seed: int = 0,
    **cache_kwargs: Any,
) -> datasets.Dataset:
    """The teacher's outputs for `draws` random views of each image of `dataset` (tensorised images, no transform).

    Returns the cache of :func:`cache_teacher_outputs` over `draws` copies of each row (row i's draws at
    `i * draws ... i * draws + draws - 1`), with each copy's `augmentation_params`; the row hash and the record cover
    the image and its parameters, so a view's parameters cannot be separated from its outputs unnoticed. Train with
    :class:`ReplayAugmentationCollator` as the data collator. `cache_kwargs` go to :func:`cache_teacher_outputs`
    (`top_k`, `batch_size`, `dtype`, `output_dir`, ...).
    """
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}.")
    if image_column not in dataset.column_names:
        raise ValueError(f"The dataset has no image column {image_column!r}; it has {dataset.column_names}.")
    generator = torch.Generator().manual_seed(seed)
    params = []
    # Images read in batches of NumPy arrays (a stacked array for fixed-size images): row by row, in torch format,
    # reading them took about 1 ms per 32x32 image.
    for batch in dataset.select_columns([image_column]).with_format("numpy").iter(batch_size=1024):
        for image in batch[image_column]:
            height, width = image.shape[-2:]
            params += [augmentation.sample(generator, height, width) for _ in range(draws)]
    repeated = dataset.select([index for index in range(len(dataset)) for _ in range(draws)])
    repeated = repeated.add_column(AUGMENTATION_PARAMS_KEY, params)
    collator = ReplayAugmentationCollator(augmentation, image_column, cache_kwargs.pop("data_collator", None))
    collator.collator = collator.collator or default_data_collator
    return cache_teacher_outputs(
        teacher,
        repeated,
        data_collator=collator,
        input_columns=[image_column, AUGMENTATION_PARAMS_KEY],
        **cache_kwargs,
    )
