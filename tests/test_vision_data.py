"""Image datasets and timm models for the vision recipes: offline digits, folders, label checks, CIFAR stems."""

import os

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, Image
from PIL import Image as PILImage

from hf_distill.data.images import (
    build_transforms,
    check_num_classes,
    load_digits_dataset,
    load_image_classification,
    stratified_subset,
    with_pixel_transform,
)
from hf_distill.recipes.timm_models import (
    check_model_name,
    create_image_model,
    load_image_model,
    model_display_name,
    save_image_model,
)


@pytest.fixture(scope="module")
def digits():
    return load_image_classification("digits")


def test_digits_split_is_fixed_stratified_and_rgb(digits):
    assert (len(digits.train), len(digits.eval)) == (1347, 450)
    assert digits.class_names == [str(i) for i in range(10)]
    image = digits.train[0]["img"]
    assert image.size == (32, 32) and image.mode == "RGB"
    again = load_digits_dataset(seed=0)["test"]["label"]
    assert again == digits.eval["label"]
    assert load_digits_dataset(seed=1)["test"]["label"] != digits.eval["label"]
    assert len(set(digits.eval["label"])) == 10


def test_stratified_subset_keeps_class_proportions(digits):
    subset = stratified_subset(digits.train, "label", 100, seed=0)
    counts = np.bincount(subset["label"], minlength=10)
    assert len(subset) == 100 and counts.min() >= 9 and counts.max() <= 11
    assert subset["label"] == stratified_subset(digits.train, "label", 100, seed=0)["label"]


def test_transforms_augment_train_only_and_normalise():
    image = PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    eval_tf = build_transforms(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=False)
    x = eval_tf(image)
    assert x.shape == (3, 32, 32)
    expected = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(eval_tf(image), x)
    train_tf = build_transforms(32, (0.5,) * 3, (0.25,) * 3, train=True, crop_padding=4, horizontal_flip=True)
    torch.manual_seed(0)
    assert any(not torch.equal(train_tf(image), x) for _ in range(5))
    affine_tf = build_transforms(
        32, (0.5,) * 3, (0.25,) * 3, train=True, crop_padding=0, horizontal_flip=False, random_affine=1.0
    )
    assert affine_tf(image).shape == (3, 32, 32) and not torch.equal(affine_tf(image), x)
    # a larger image is resized to the model's input size
    assert eval_tf(image.resize((64, 64))).shape == (3, 32, 32)


def test_batches_are_pixel_values_and_labels(digits):
    tf = build_transforms(32, (0.3,) * 3, (0.3,) * 3, train=False)
    ds = with_pixel_transform(digits.eval, "img", "label", tf)
    row = ds[0]
    assert set(row) == {"pixel_values", "labels"}
    assert row["pixel_values"].shape == (3, 32, 32) and row["labels"] == digits.eval[0]["label"]


def _write_image_folder(root, classes=("cat", "dog", "frog"), per_class=4):
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(root / name)
        for i in range(per_class):
            PILImage.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_local_image_folder_is_split_with_fixed_seed(tmp_path):
    _write_image_folder(tmp_path / "images")
    data = load_image_classification(str(tmp_path / "images"), test_size=0.25, seed=0)
    assert data.class_names == ["cat", "dog", "frog"]
    assert len(data.train) + len(data.eval) == 12 and len(data.eval) == 3
    assert data.eval[data.label_column] == load_image_classification(str(tmp_path / "images"), seed=0).eval["label"]


def test_save_to_disk_folder(tmp_path, digits):
    digits.train.select(range(20)).save_to_disk(str(tmp_path / "saved"))
    data = load_image_classification(str(tmp_path / "saved"), test_size=0.5)
    assert (len(data.train), len(data.eval), data.num_classes) == (10, 10, 10)


def test_missing_path_and_bad_labels_raise(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_image_classification(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="does not exist"):
        load_image_classification("./no/such/folder")
    image = PILImage.new("RGB", (8, 8))
    splits = DatasetDict(
        train=Dataset.from_dict({"img": [image] * 4, "label": [0, 1, 0, 1]}).cast_column("img", Image()),
        test=Dataset.from_dict({"img": [image] * 2, "label": [0, 5]}).cast_column("img", Image()),
    )
    splits.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="eval labels .* span 0..5, outside 0..1"):
        load_image_classification(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="No label column 'missing'"):
        load_image_classification(str(tmp_path / "bad"), label_column="missing")
    with pytest.raises(ValueError, match="predicts 10 classes but the dataset has 3"):
        check_num_classes(3, 10, "resnet18")


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(ValueError, match="Unknown timm model 'resnet51'.*resnet50"):
        create_image_model("resnet51", 10)
    assert check_model_name("resnet50.a1_in1k") == "resnet50"


def test_cifar_stem_keeps_resolution_for_resnets_and_vits():
    plain = create_image_model("test_resnet", 10)
    cifar = create_image_model("test_resnet", 10, cifar_stem=True)
    x = torch.randn(2, 3, 32, 32)
    assert cifar(x).shape == (2, 10)
    assert cifar.forward_features(x).shape[-1] == 4 * plain.forward_features(x).shape[-1]
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    vit = create_image_model("test_vit", 10, image_size=32, cifar_stem=True, patch_size=8, depth=2)
    assert vit.patch_embed.grid_size == (4, 4) and vit(x).shape == (2, 10)
    assert model_display_name(cifar) == "test_resnet (CIFAR stem)"
    with pytest.raises(ValueError, match="cifar_stem"):
        create_image_model("test_convnext", 10, cifar_stem=True)


@pytest.mark.parametrize(
    "name, kwargs",
    [("test_resnet", {"cifar_stem": True}), ("test_vit", {"image_size": 32, "cifar_stem": True, "depth": 1})],
)
def test_saved_model_reloads_identically(tmp_path, name, kwargs):
    model = create_image_model(name, 10, **kwargs).eval()
    save_image_model(model, str(tmp_path / "m"), [str(i) for i in range(10)])
    loaded = load_image_model(str(tmp_path / "m"), num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="predicts 10 classes but the dataset has 3"):
        load_image_model(str(tmp_path / "m"), num_classes=3)


def test_weights_only_checkpoint_needs_the_architecture(tmp_path):
    from safetensors.torch import save_file

    model = create_image_model("test_resnet", 4, cifar_stem=True).eval()
    os.makedirs(tmp_path / "checkpoint-10")
    save_file(model.state_dict(), str(tmp_path / "checkpoint-10" / "model.safetensors"))
    with pytest.raises(ValueError, match="no config.json"):
        load_image_model(str(tmp_path / "checkpoint-10"))
    loaded = load_image_model(str(tmp_path / "checkpoint-10"), 4, "test_resnet", cifar_stem=True).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="does not exist"):
        load_image_model(str(tmp_path / "missing"))
