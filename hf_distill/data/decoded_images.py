"""Image datasets decoded once: each image's uint8 pixels stored as bytes in Arrow, augmented and normalised per batch
as tensors, so that no step decodes a file or converts a PIL image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, Value
from torchvision import transforms as T

from .images import ImageClassificationData

PIXELS = "pixel_values"
LABELS = "labels"


def decode_images(ds: Dataset, image_column: str, label_column: str, image_size: int) -> Dataset:
    """`ds` with every image decoded once: a `pixel_values` column holding the bytes of a uint8 `(3, S, S)` array
    (`S = image_size`: the RGB image resized and centre-cropped as :func:`~hf_distill.data.images.build_transforms`
    does) and a `labels` column; other columns are dropped.

    The result takes `3 S²` bytes per image (3 KiB at 32×32); a dataset loaded from files is decoded into `datasets`'
    cache, once for all runs with the same `image_size`.
    """
    resize = T.Compose([T.Resize(image_size), T.CenterCrop(image_size)])

    def decode(batch: dict[str, list]) -> dict[str, list]:
        pixels = [np.asarray(resize(image.convert("RGB")), dtype=np.uint8) for image in batch[image_column]]
        return {
            PIXELS: [np.ascontiguousarray(p.transpose(2, 0, 1)).tobytes() for p in pixels],  # (H, W, 3) -> (3, H, W)
            LABELS: list(batch[label_column]),
        }

    ds = ds.select_columns([image_column, label_column])
    features = Features({PIXELS: Value("binary"), LABELS: ds.features[label_column]})
    return ds.map(decode, batched=True, remove_columns=ds.column_names, features=features, desc="Decoding images")


def decode_image_data(data: ImageClassificationData, image_size: int) -> ImageClassificationData:
    """`data` with both splits decoded by :func:`decode_images` (same rows in the same order)."""
    return replace(
        data,
        train=decode_images(data.train, data.image_column, data.label_column, image_size),
        eval=decode_images(data.eval, data.image_column, data.label_column, image_size),
        image_column=PIXELS,
        label_column=LABELS,
    )


class DecodedImageTransform:
    """The `with_transform` of a decoded dataset: bytes → uint8 `(3, S, S)` → the random steps of `augment` → float
    in 0..1 → `Normalize(mean, std)`.

    `augment` holds the steps of :func:`~hf_distill.data.images.augmentations`, in order. Their random parameters are
    drawn image by image in the order torchvision draws them, so that a seed gives the views that the PIL transforms
    of :func:`~hf_distill.data.images.build_transforms` give; the crops, flips and normalisation are then applied to
    the whole batch at once in NumPy (`RandomAffine` stays per image, in torch). Without `augment` the rows equal
    those of :func:`~hf_distill.data.images.with_pixel_transform` with the eval transform.
    """

    def __init__(
        self, image_size: int, mean: Sequence[float], std: Sequence[float], augment: Sequence[Any] = ()
    ) -> None:
        self.shape = (3, image_size, image_size)
        self.mean, self.std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in (mean, std))  # (3, 1, 1)
        self.affine = self.crop = self.flip = None
        for step in augment:
            kinds = ((T.RandomAffine, "affine"), (T.RandomCrop, "crop"), (T.RandomHorizontalFlip, "flip"))
            kind = next((name for cls, name in kinds if isinstance(step, cls)), None)
            if kind is None or getattr(self, kind) is not None:
                raise ValueError(f"Unsupported augmentation step {step!r}: give those of `augmentations()`.")
            setattr(self, kind, step)
        if self.crop is not None and (self.crop.padding_mode != "constant" or self.crop.fill != 0):
            raise ValueError("Only zero padding of the random crop is supported.")

    def _padding(self) -> int:
        padding = self.crop.padding if self.crop is not None else 0
        if not isinstance(padding, int):
            raise ValueError(f"The random crop's padding must be one number of pixels, got {padding!r}.")
        return padding

    def _augment(self, pixels: np.ndarray) -> np.ndarray:
        """Random views of a `(B, 3, S, S)` uint8 batch, drawn image by image as the per-image transforms draw them."""
        size, padding = self.shape[-1], self._padding()
        images, offsets, flips = [], [], []
        for image in pixels:
            images.append(self.affine(torch.from_numpy(image)).numpy() if self.affine is not None else image)
            if self.crop is not None:  # `RandomCrop.get_params` on the padded image: the row, then the column
                offsets.append([torch.randint(0, 2 * padding + 1, size=(1,)).item() for _ in range(2)])
            if self.flip is not None:
                flips.append(bool(torch.rand(1) < self.flip.p))
        pixels = np.stack(images) if self.affine is not None else pixels
        if self.crop is not None:
            padded = np.pad(pixels, [(0, 0), (0, 0), (padding, padding), (padding, padding)])  # zeros
            rows, cols = (np.asarray(offsets)[:, k, None] + np.arange(size) for k in range(2))  # (B, S) each
            batch = np.arange(len(pixels))[:, None, None, None]
            pixels = padded[batch, np.arange(3)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip is not None:
            pixels = np.where(np.asarray(flips)[:, None, None, None], pixels[..., ::-1], pixels)
        return pixels

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        # NumPy rather than torch: the batch is small, and torch's intra-op threads would compete with the step's.
        pixels = np.frombuffer(bytearray(b"".join(batch[PIXELS])), dtype=np.uint8)
        pixels = pixels.reshape(-1, *self.shape)  # (B, 3, S, S)
        if self.affine is not None or self.crop is not None or self.flip is not None:
            pixels = self._augment(pixels)
        # `ToTensor` and `Normalize` in float32, operation for operation
        values = (pixels.astype(np.float32) / np.float32(255) - self.mean) / self.std
        return {PIXELS: list(torch.from_numpy(values).unbind(0)), LABELS: list(batch[LABELS])}


def with_decoded_transform(ds: Dataset, transform: DecodedImageTransform) -> Dataset:
    """A decoded dataset yielding `{"pixel_values": (3, S, S) float tensor, "labels": int}` rows."""
    if sorted(ds.column_names) != sorted([PIXELS, LABELS]):
        raise ValueError(
            f"Expected a dataset from decode_images with columns {[PIXELS, LABELS]}; got {ds.column_names}."
        )
    return ds.with_transform(transform)
