"""The faster and leaner paths give what the plain ones give: the chunked soft loss inside the trainer, the
tensorised image datasets, and the cheaper teacher forward."""

from dataclasses import replace

import pytest
import torch
from datasets import Dataset

from hf_distill import DistillationTrainer
from hf_distill.students import student_from_teacher
from hf_distill.terms.logits import AUTO_CHUNK_MIN_ELEMENTS, use_chunked_loss
from tests.conftest import lm_dataset, tiny_gpt2

# ---- The chunked soft loss in the trainer ----


def _gpt2_pair():
    teacher = tiny_gpt2(seed=3, layers=4)
    return teacher, student_from_teacher(teacher, layers=[0, 2])


def _padded_lm_dataset(n: int = 16, seq_len: int = 12) -> Dataset:
    """An LM dataset with right padding (labels -100), so that some chunks lie wholly outside the soft mask."""
    rows = lm_dataset(n, seq_len)
    attention = [[int(label != -100) for label in labels] for labels in rows["labels"]]
    return rows.add_column("attention_mask", attention)


def test_auto_chunking_takes_large_token_level_logits_only():
    assert not use_chunked_loss(torch.zeros(4, 10), None) and not use_chunked_loss(torch.zeros(4, 10), 8)
    assert not use_chunked_loss(torch.zeros(2, 3, 5), None) and use_chunked_loss(torch.zeros(2, 3, 5), 2)
    assert not use_chunked_loss(torch.zeros(2, 3, 5), 0)
    assert use_chunked_loss(torch.empty(1, AUTO_CHUNK_MIN_ELEMENTS // 8, 8), None)


@pytest.mark.parametrize(
    ("divergence", "alpha", "label_smoothing"),
    [
        ("forward_kl", 1.0, 0.0),
        ("jsd", 1.0, 0.0),
        ("forward_kl", 0.5, 0.0),
        ("forward_kl", 0.3, 0.1),
        ("jsd", 0.5, 0.1),
    ],
)
@pytest.mark.parametrize("temperature", [4.0, 2.0])  # at 2 the pair's whole gradient in the forward pass
def test_chunked_soft_loss_in_the_trainer_gives_the_same_gradients(
    args_factory, divergence, alpha, label_smoothing, temperature
):
    # With both terms and the forward KL, the soft and hard losses are computed together (share_soft_and_hard).
    batch = {key: torch.as_tensor(value) for key, value in _padded_lm_dataset()[:8].items()}
    gradients = []
    for chunk_size in (0, 3):
        teacher, student = _gpt2_pair()
        args = args_factory(
            loss_chunk_size=chunk_size,
            distillation_loss=divergence,
            alpha=alpha,
            label_smoothing_factor=label_smoothing,
            temperature=temperature,
        )
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
        assert trainer.loss_terms[0].chunk_size == chunk_size
        loss = trainer.compute_loss(student, dict(batch))
        loss.backward()
        gradients.append((loss.detach(), [p.grad.clone() for p in student.parameters() if p.grad is not None]))
    (plain_loss, plain_grads), (chunked_loss, chunked_grads) = gradients
    torch.testing.assert_close(chunked_loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert len(plain_grads) == len(chunked_grads) > 0
    for plain, chunked in zip(plain_grads, chunked_grads, strict=True):
        torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("temperature", "accumulation"), [(4.0, 1), (2.0, 2), (1.0, 1)])
def test_chunked_soft_loss_trains_the_same_weights(args_factory, monkeypatch, temperature, accumulation):
    # At T = 1 and 2 the trainer announces the weights of the soft and hard pair (the terms' weights over the
    # Trainer's label count of the accumulated batch), so the backward pass never computes the gradient anew.
    from hf_distill.losses import chunked_ce

    recomputed, original = [], chunked_ce.CrossEntropyKernel.add_gradient

    def recording(self, *args, **kwargs):
        recomputed.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(chunked_ce.CrossEntropyKernel, "add_gradient", recording)
    dataset = _padded_lm_dataset()
    runs = []
    for chunk_size in (0, 5):
        teacher, student = _gpt2_pair()
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            # SGD: an update proportional to the gradient. Adam divides each gradient by its running scale, so the
            # float rounding in which the chunked forward KL's hand-derived gradient differs from autograd's would
            # move weights with near-zero gradients by up to the learning rate.
            args=args_factory(
                loss_chunk_size=chunk_size,
                optim="sgd",
                learning_rate=0.5,
                temperature=temperature,
                gradient_accumulation_steps=accumulation,
            ),
            train_dataset=dataset,
        )
        trainer.train()
        losses = [(log["loss"], log["soft_loss"]) for log in trainer.state.log_history if "soft_loss" in log]
        runs.append((losses, {name: p.detach().clone() for name, p in student.named_parameters()}))
    assert (len(recomputed) == 0) == (temperature in (1.0, 2.0))
    (plain_losses, plain_weights), (chunked_losses, chunked_weights) = runs
    assert len(plain_losses) == 3
    torch.testing.assert_close(torch.tensor(chunked_losses), torch.tensor(plain_losses), rtol=1e-6, atol=1e-6)
    initial = dict(_gpt2_pair()[1].named_parameters())
    assert max((weight - initial[name]).abs().max() for name, weight in plain_weights.items()) > 1e-2  # it trained
    for name, weight in plain_weights.items():
        torch.testing.assert_close(chunked_weights[name], weight, rtol=1e-6, atol=1e-6)


def test_loss_chunk_size_must_be_a_non_negative_integer(args_factory):
    with pytest.raises(ValueError, match="loss_chunk_size"):
        args_factory(loss_chunk_size=-1)


# ---- Images decoded once ----


@pytest.fixture(scope="module")
def digits():
    from hf_distill.data.images import load_image_classification

    data = load_image_classification("digits", max_train_samples=None)
    return replace(data, train=data.train.select(range(64)), eval=data.eval.select(range(16)))


def _image_datasets(digits, image_size: int, crop_padding: int, flip: bool, affine: float = 0.0):
    from hf_distill.data.decoded_images import DecodedImageTransform, decode_image_data, with_decoded_transform
    from hf_distill.data.images import augmentations, build_transforms, with_pixel_transform

    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    train = crop_padding > 0 or flip or affine > 0
    old = with_pixel_transform(
        digits.train,
        digits.image_column,
        digits.label_column,
        build_transforms(image_size, mean, std, train, crop_padding, flip, affine),
    )
    steps = augmentations(image_size, crop_padding, flip, affine) if train else []
    decoded = decode_image_data(digits, image_size)
    new = with_decoded_transform(decoded.train, DecodedImageTransform(image_size, mean, std, steps))
    return old, new


@pytest.mark.parametrize("image_size", [32, 24])
def test_decoded_images_equal_the_pil_path_without_augmentation(digits, image_size):
    old, new = _image_datasets(digits, image_size, crop_padding=0, flip=False)
    indices = [5, 0, 63, 17]
    old_rows, new_rows = old[indices], new[indices]
    assert new_rows["labels"] == old_rows["labels"] == [digits.train[i]["label"] for i in indices]
    for old_pixels, new_pixels in zip(old_rows["pixel_values"], new_rows["pixel_values"], strict=True):
        assert new_pixels.shape == (3, image_size, image_size) and new_pixels.dtype == torch.float32
        assert torch.equal(new_pixels, old_pixels)


def test_decoded_crops_and_flips_are_the_pil_views_for_a_seed(digits):
    old, new = _image_datasets(digits, 32, crop_padding=4, flip=True)
    torch.manual_seed(7)
    old_rows = old[:32]["pixel_values"]
    torch.manual_seed(7)
    new_rows = new[:32]["pixel_values"]
    assert all(torch.equal(a, b) for a, b in zip(old_rows, new_rows, strict=True))
    plain = _image_datasets(digits, 32, crop_padding=0, flip=False)[1][:32]["pixel_values"]
    assert sum(not torch.equal(a, b) for a, b in zip(new_rows, plain, strict=True)) > 16  # augmentation happened


def test_decoded_affine_draws_the_same_parameters(digits):
    # torchvision's tensor and PIL affine kernels round coordinates differently, so compare the tensor kernel
    from hf_distill.data.decoded_images import DecodedImageTransform, decode_images
    from hf_distill.data.images import augmentations

    steps = augmentations(32, 4, True, 1.0)
    decoded = decode_images(digits.train.select(range(8)), "img", "label", 32)
    transform = DecodedImageTransform(32, (0.0,) * 3, (1.0,) * 3, steps)
    torch.manual_seed(3)
    batch = transform(decoded[:8])["pixel_values"]
    torch.manual_seed(3)
    compose = torchvision_compose(steps)
    pixels = [
        torch.frombuffer(bytearray(row), dtype=torch.uint8).view(3, 32, 32) for row in decoded[:8]["pixel_values"]
    ]
    expected = [compose(image).float() / 255 for image in pixels]
    assert all(torch.equal(a, b) for a, b in zip(batch, expected, strict=True))


def torchvision_compose(steps):
    from torchvision import transforms

    return transforms.Compose(steps)


def test_decoded_transform_refuses_other_steps():
    from torchvision import transforms

    from hf_distill.data.decoded_images import DecodedImageTransform

    with pytest.raises(ValueError, match="Unsupported augmentation"):
        DecodedImageTransform(32, (0.5,) * 3, (0.5,) * 3, [transforms.ColorJitter(0.5)])


# ---- The teacher forward ----


def test_teacher_outputs_can_be_saved_for_the_students_backward():
    # `torch.inference_mode` is faster on small teachers (benchmarks/speed.py) but its tensors cannot be saved for
    # backward, which losses that multiply by teacher outputs or features (hints' MSE) need: the teacher stays
    # under `no_grad`.
    from hf_distill.modeling import teacher_forward

    teacher = tiny_gpt2(seed=1).eval()
    batch = {key: torch.as_tensor(value) for key, value in lm_dataset(4)[:4].items()}
    logits, _ = teacher_forward(teacher, batch)
    assert not logits.requires_grad and not logits.is_inference()
    student_logits = torch.zeros_like(logits, requires_grad=True)
    torch.nn.functional.mse_loss(student_logits, logits).backward()
    torch.testing.assert_close(student_logits.grad, -2 * logits / logits.numel())


def test_channels_last_teacher_gives_the_same_outputs_and_training(args_factory):
    from hf_distill.modeling import is_channels_last, teacher_forward
    from tests.conftest import TinyCNN, image_dataset

    dataset = image_dataset(16)
    pixels = torch.stack([row["pixel_values"] for row in dataset])
    runs = {}
    for channels_last in (False, True):
        teacher, student = TinyCNN(width=6, seed=1), TinyCNN(seed=2)
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args_factory(teacher_channels_last=channels_last),
            train_dataset=dataset,
        )
        assert is_channels_last(trainer.teacher_model) == channels_last
        logits = teacher_forward(trainer.teacher_model, {"pixel_values": pixels})[0]
        trainer.train()
        runs[channels_last] = (logits, [p.detach().clone() for p in student.parameters()])
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-6)
    for last, plain in zip(runs[True][1], runs[False][1], strict=True):
        torch.testing.assert_close(last, plain, rtol=1e-5, atol=1e-6)


def test_channels_last_refuses_a_teacher_without_convolutions(args_factory):
    teacher, student = _gpt2_pair()
    with pytest.raises(ValueError, match="teacher_channels_last needs a teacher with 4-D"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args_factory(teacher_channels_last=True))


class _RepeatingNet(torch.nn.Module):
    """`(B, 3, 8, 8)` images → logits through two `(B, 192 * copies)` activations, the repeated pixels and their
    product with a weight: with autograd both are kept for the backward pass, without it both exist for a moment."""

    def __init__(self, copies: int = 256, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.copies, self.head = copies, torch.nn.Linear(192, 3)

    def forward(self, pixel_values):
        wide = pixel_values.flatten(1).repeat(1, self.copies) * self.head.weight[0, 0]
        return self.head(wide.view(len(pixel_values), self.copies, 192).mean(1))


def test_the_teacher_runs_before_the_student_so_their_activations_never_add_up(args_factory):
    from benchmarks.loss_memory import profiled_bytes
    from tests.conftest import image_dataset

    dataset, student = image_dataset(16), _RepeatingNet(seed=0)
    trainer = DistillationTrainer(student, args_factory(), train_dataset=dataset, teacher_model=_RepeatingNet(seed=1))
    batch = {key: torch.stack([row[key] for row in dataset]) for key in ("pixel_values", "labels")}
    wide_bytes = 16 * 192 * student.copies * 4
    losses = []  # keeps the student's activations alive until the profiler has stopped
    peak = profiled_bytes(lambda: losses.append(trainer.compute_loss(student, dict(batch))))[0]
    # Teacher first: at most two wide activations at a time. Student first: its two, kept, plus the teacher's two.
    assert 2 * wide_bytes <= peak < 3 * wide_bytes
