"""Time and memory per training step of every distillation path, measured in one process: the data path, plain
training and online distillation as a hand-written PyTorch loop and through the trainers, distillation from a full
and from a top-k teacher cache, the teacher forward alone and its cheaper variants, the cache build and the peak
memory; and the targets they are held to.

Run from the repository root:

    python benchmarks/speed.py --threads 2                              # every setting, the defaults below
    python benchmarks/speed.py --settings vision --teacher resnet18 --student test_resnet --batch_size 64
    python benchmarks/speed.py --settings text lm --rounds 9 --steps 1 --variants inference_mode compile

Settings (models built in code with random weights; nothing is downloaded):
- `digits`: the demo (`recipes/configs/digits_demo.json`): timm resnet18 → test_resnet on the sklearn digits at
  32×32, batch 32, random crops; the data path only.
- `vision`: the CIFAR recipe's shape (`recipes/configs/cifar10_resnet.json`): timm `--teacher` → `--student` with
  CIFAR stems at 32×32, `--batch_size` images, random crops and flips, on generated CIFAR-shaped data (random PNG
  images in an in-memory `datasets.Dataset`, as CIFAR-10 comes from the Hub). Its caches hold one recorded crop and
  flip per image, replayed for the student (`cache_augmented_teacher_outputs`); top-k keeps 4 of the 10 classes.
- `text`: BERT with `--text_layers` (6 and 2) of width 256, batch 32 × 64 tokens of a tokenised dataset, 2 labels
  (top-k: k = 1 and the rest of the mass in one bucket).
- `lm`: a Llama-style causal LM, 4 → 2 layers of width 256, V = 32,000, batch 2 × 512 tokens (top-k: k = 32); peak
  memory also in units of one float32 logits tensor.

What is printed; times are medians over `--rounds` interleaved rounds (absolute times drift on a shared machine,
ratios within a round less so), each of `--steps` steps (after `--warmup_steps` untimed steps of the same path, or
builds of the same cache: a step that follows another path with a larger footprint re-faults its memory, which a
training run does not do):
- data path (`digits`, `vision`, `text`): wall time per step (batches drawn from the Trainer's data loader) / compute
  time per step (the same step on a batch already in memory), and the loading alone / compute; for images, decoded
  once (`hf_distill.data.decoded_images`, what the recipes use) and, for comparison, decoded and transformed from
  PIL images at every step; `--num_workers` data-loader workers (persistent).
- paths (`vision`, `text`, `lm`; see `step_paths.py`): ms per step on a batch in memory, ms of loading per step,
  peak memory of torch's allocations in a step; the cache builds; and the targets: online DistillationTrainer ≤ 1.03
  × (plain Trainer + teacher forward), Trainer ≤ 1.05 × the hand-written loop (plain and online), full-cache and
  top-k-cache steps ≤ 1.05 × plain, E epochs from the full cache with its build ≤ plain + teacher forward / E.
- teacher forward (`--variants`): `torch.utils.benchmark.Timer.blocked_autorange` of each variant / `torch.no_grad`
  in float32: `torch.inference_mode`, channels-last (CNN teachers), bfloat16, `torch.compile`; with the largest
  difference of its logits from the baseline's.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Array3D, ClassLabel, Dataset, Features, Image
from step_paths import Setting, first_batch, loader_steps, make_trainer, measure_paths, timed, train_step
from torch import nn
from torch.utils import benchmark
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM, Trainer

from hf_distill import cache_teacher_outputs
from hf_distill.data.decoded_images import DecodedImageTransform, decode_images, with_decoded_transform
from hf_distill.data.images import augmentations, build_transforms, load_image_classification, with_pixel_transform
from hf_distill.recipes.timm_models import create_image_model
from hf_distill.teachers import CropFlip, ReplayAugmentationCollator, cache_augmented_teacher_outputs

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


# ---- Timing ----


def median_ratios(variants: dict[str, Callable[[], float]], rounds: int, baseline: str) -> dict[str, float]:
    """Median over `rounds` of `seconds(variant) / seconds(baseline)`, the variants run in turn within each round."""
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        seconds = {name: measure() for name, measure in variants.items()}
        for name in variants:
            ratios[name].append(seconds[name] / seconds[baseline])
    return {name: statistics.median(values) for name, values in ratios.items()}


def autorange(fn: Callable[[], Any], threads: int, min_run_time: float) -> Callable[[], float]:
    """A measure: `torch.utils.benchmark`'s median seconds per call of `fn`."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return lambda: timer.blocked_autorange(min_run_time=min_run_time).median


# ---- Trainers and steps ----


class PixelClassifier(nn.Module):
    """A timm classifier called as `transformers.Trainer` calls models: keywords in, a loss out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.model(pixel_values)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


# ---- Data path ----


def data_path(name: str, trainers: dict[str, Trainer], args) -> None:
    """Wall time per step through each trainer's loader / compute time per step on a batch in memory."""
    variants: dict[str, Callable[[], float]] = {}
    for label, trainer in trainers.items():
        batch = first_batch(trainer)
        variants[f"compute {label}"] = timed(
            lambda trainer=trainer, batch=batch: train_step(trainer, batch), args.steps
        )
        variants[f"wall {label}"] = loader_steps(trainer, args.steps, train=True)
        variants[f"load {label}"] = loader_steps(trainer, args.steps, warmup=args.warmup_steps)
    for measure in variants.values():  # warm-up
        measure()
    ratios: dict[str, list[float]] = {f"{kind} {label}": [] for label in trainers for kind in ("wall", "load")}
    for _ in range(args.rounds):
        measured = {key: measure() for key, measure in variants.items()}
        for key in ratios:
            ratios[key].append(measured[key] / measured[f"compute {key.split(' ', 1)[1]}"])
    print(f"  {name}: wall time per step, and loading alone, / compute time per step")
    for label in trainers:
        wall, load = (statistics.median(ratios[f"{kind} {label}"]) for kind in ("wall", "load"))
        print(f"    {label:<46} wall {wall:6.3f}  load {load:6.3f}")


def cifar_like(n: int, seed: int = 0) -> Dataset:
    """`n` random 32×32 RGB images stored as PNG in an in-memory `datasets.Dataset`, as CIFAR-10 is."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    images = [PILImage.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    features = Features({"img": Image(), "label": ClassLabel(num_classes=10)})
    return Dataset.from_dict({"img": images, "label": rng.integers(0, 10, n).tolist()}, features=features)


def image_datasets(raw: Dataset, crop_padding: int, horizontal_flip: bool) -> dict[str, Dataset]:
    steps = augmentations(32, crop_padding, horizontal_flip)
    decoded = with_decoded_transform(
        decode_images(raw, "img", "label", 32), DecodedImageTransform(32, MEAN, STD, steps)
    )
    pil = with_pixel_transform(
        raw, "img", "label", build_transforms(32, MEAN, STD, True, crop_padding, horizontal_flip)
    )
    return {"decoded once (recipes)": decoded, "PIL transform per step (before)": pil}


def digits_setting(args) -> None:
    print("digits demo: resnet18 -> test_resnet, 32x32, batch 32, random crops (DistillationTrainer)")
    raw = load_image_classification("digits").train
    trainers = {}
    for label, dataset in image_datasets(raw, crop_padding=4, horizontal_flip=False).items():
        for workers in args.num_workers:
            teacher = create_image_model("resnet18", 10, image_size=32)
            student = create_image_model("test_resnet", 10, image_size=32)
            trainers[f"{label}, {workers} workers"] = make_trainer(student, dataset, 32, teacher, num_workers=workers)
    data_path("data path", trainers, args)


# ---- Vision and text settings ----


TEACHER_VARIANTS = ("inference_mode", "channels_last", "bfloat16", "compile")


def teacher_variants(teacher: nn.Module, inputs: torch.Tensor, args, cnn: bool) -> None:
    """Each way of running the teacher forward / `torch.no_grad` in float32; the largest logit difference."""
    teacher = teacher.eval()

    def call(model: nn.Module, x: Any, mode: Callable = torch.no_grad) -> torch.Tensor:
        with mode():
            output = model(**x) if isinstance(x, dict) else model(x)
        return output.logits if hasattr(output, "logits") else output

    as_float = {k: v for k, v in inputs.items()} if isinstance(inputs, dict) else inputs
    forwards: dict[str, Callable[[], torch.Tensor]] = {"no_grad (baseline)": lambda: call(teacher, as_float)}
    if "inference_mode" in args.variants:
        forwards["inference_mode"] = lambda: call(teacher, as_float, torch.inference_mode)
    if cnn and "channels_last" in args.variants:
        last = _copy(teacher).to(memory_format=torch.channels_last)
        x_last = inputs.contiguous(memory_format=torch.channels_last)
        forwards["channels_last"] = lambda: call(last, x_last)
    if "bfloat16" in args.variants:
        bf16 = _copy(teacher).to(torch.bfloat16)
        x_bf16 = inputs.to(torch.bfloat16) if not isinstance(inputs, dict) else inputs
        forwards["bfloat16"] = lambda: call(bf16, x_bf16)
    if "compile" in args.variants:
        compiled = torch.compile(_copy(teacher))
        start = time.perf_counter()
        call(compiled, as_float)
        print(f"  torch.compile of the teacher: first call {time.perf_counter() - start:.1f} s")
        forwards["torch.compile"] = lambda: call(compiled, as_float)
    reference = forwards["no_grad (baseline)"]().float()
    differences = {name: (fn().float() - reference).abs().max().item() for name, fn in forwards.items()}
    measures = {name: autorange(fn, args.threads, args.min_run_time) for name, fn in forwards.items()}
    ratios = median_ratios(measures, args.rounds, "no_grad (baseline)")
    print("  teacher forward / no_grad in float32 (torch.utils.benchmark), max |logit difference|")
    for name, ratio in ratios.items():
        if name != "no_grad (baseline)":
            print(f"    {name:<58} {ratio:6.3f}   {differences[name]:.1e}")


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def vision_setting(args) -> None:
    size = args.batch_size
    print(f"vision: {args.teacher} -> {args.student}, CIFAR stems, 32x32, batch {size}, crops and flips")

    def make(name: str, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return create_image_model(name, 10, image_size=32, cifar_stem=True)

    raw = cifar_like(args.images)
    datasets = image_datasets(raw, crop_padding=4, horizontal_flip=True)
    trainers = {}
    for label, dataset in datasets.items():
        for workers in args.num_workers:
            trainer = make_trainer(make(args.student), dataset, size, make(args.teacher), num_workers=workers)
            trainers[f"{label}, {workers} workers"] = trainer
    data_path("data path (DistillationTrainer, teacher online)", trainers, args)
    teacher = make(args.teacher, seed=1)
    crop_flip = CropFlip(size=32, padding=4)
    images = decoded_tensors(raw)

    def build_cache(teacher: nn.Module, top_k: int | None, images: Dataset) -> Dataset:  # one crop and flip per image
        return cache_augmented_teacher_outputs(teacher, images, crop_flip, draws=1, top_k=top_k, batch_size=size)

    def logits(model: nn.Module, batch: dict) -> torch.Tensor:
        return model(batch["pixel_values"])

    print(
        "  paths (caches: one recorded crop and flip per image, replayed by ReplayAugmentationCollator; top-k: k = 4 "
        "of 10 classes)"
    )
    setting = Setting(
        make_student=lambda: make(args.student),
        teacher=teacher,
        dataset=datasets["decoded once (recipes)"],
        build_cache=build_cache,
        cache_source=images,
        cache_collator=ReplayAugmentationCollator(crop_flip),
        wrap_plain=PixelClassifier,
        hand=(logits, lambda batch: batch["labels"], lambda m, b: F.cross_entropy(logits(m, b), b["labels"])),
        batch_size=size,
        top_k=4,
    )
    measure_paths(setting, args)
    teacher_variants(teacher, first_batch(trainers[next(iter(trainers))])["pixel_values"], args, cnn=True)


def decoded_tensors(raw: Dataset) -> Dataset:
    """The images of `raw` decoded once and normalised, as float32 `(3, 32, 32)` arrays in torch format: what a
    teacher cache is built from (it refuses on-the-fly transforms)."""
    to_tensors = DecodedImageTransform(32, MEAN, STD)
    features = Features({"pixel_values": Array3D((3, 32, 32), "float32"), "labels": ClassLabel(num_classes=10)})
    decoded = decode_images(raw, "img", "label", 32)

    def normalise(batch: dict[str, list]) -> dict[str, list]:
        rows = to_tensors(batch)
        return {"pixel_values": [pixels.numpy() for pixels in rows["pixel_values"]], "labels": rows["labels"]}

    tensors = decoded.map(normalise, batched=True, features=features)
    return tensors.with_format("torch")


def text_setting(args) -> None:
    teacher_layers, student_layers = args.text_layers
    print(f"text: BERT {teacher_layers}L -> {student_layers}L (width 256), batch 32 x 64 tokens")

    def make(layers: int, seed: int = 0) -> BertForSequenceClassification:
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=30522, hidden_size=256, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=1024
        )
        return BertForSequenceClassification(config)

    rng = np.random.default_rng(0)
    dataset = Dataset.from_dict(  # a tokenised dataset: lists of token ids, collated into tensors per batch
        {
            "input_ids": rng.integers(1000, 30000, (512, 64)).tolist(),
            "attention_mask": np.ones((512, 64), dtype=int).tolist(),
            "labels": rng.integers(0, 2, 512).tolist(),
        }
    )
    trainers = {
        f"{workers} workers": make_trainer(
            make(student_layers), dataset, 32, make(teacher_layers), num_workers=workers
        )
        for workers in args.num_workers
    }
    data_path("data path (DistillationTrainer, teacher online)", trainers, args)
    teacher = make(teacher_layers, seed=1)

    def logits(model: nn.Module, batch: dict) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    print("  paths (top-k: k = 1 of 2 classes, the rest of the mass in one bucket)")
    setting = Setting(
        make_student=lambda: make(student_layers),
        teacher=teacher,
        dataset=dataset,
        build_cache=lambda teacher, top_k, rows: cache_teacher_outputs(teacher, rows, top_k=top_k, batch_size=32),
        cache_source=dataset,
        cache_collator=None,
        wrap_plain=lambda model: model,
        hand=(logits, lambda batch: batch["labels"], lambda model, batch: model(**batch).loss),
        batch_size=32,
        top_k=1,
    )
    measure_paths(setting, args)
    batch = first_batch(trainers[next(iter(trainers))])
    teacher_variants(teacher, {k: v for k, v in batch.items() if k != "labels"}, args, cnn=False)


def causal_lm_setting(args) -> None:
    batch, length, vocab_size = 2, 512, 32000
    print(f"causal LM: Llama 4L -> 2L (width 256), V = {vocab_size}, batch {batch} x {length} tokens")

    def make(layers: int, seed: int = 0) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=length,
        )
        return LlamaForCausalLM(config)

    tokens = np.random.default_rng(0).integers(0, vocab_size, (args.lm_examples, length)).tolist()
    dataset = Dataset.from_dict(
        {"input_ids": tokens, "attention_mask": [[1] * length] * len(tokens), "labels": tokens}
    )

    def logits(model: nn.Module, batch: dict) -> torch.Tensor:  # next-token logits (N, V)
        output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return output.logits[:, :-1].reshape(-1, vocab_size)

    print("  paths (top-k: k = 32; peak also in units of one float32 logits tensor of the batch)")
    setting = Setting(
        make_student=lambda: make(2),
        teacher=make(4, seed=1),
        dataset=dataset,
        build_cache=lambda teacher, top_k, rows: cache_teacher_outputs(teacher, rows, top_k=top_k, batch_size=batch),
        cache_source=dataset,
        cache_collator=None,
        wrap_plain=lambda model: model,
        hand=(logits, lambda b: b["labels"][:, 1:].reshape(-1), lambda model, b: model(**b).loss),
        batch_size=batch,
        top_k=32,
    )
    measure_paths(setting, args, logits_numel=batch * length * vocab_size)


SETTINGS = {"digits": digits_setting, "vision": vision_setting, "text": text_setting, "lm": causal_lm_setting}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are taken over them")
    parser.add_argument("--steps", type=int, default=2, help="training steps per measurement")
    parser.add_argument(
        "--warmup_steps",
        type=int,
        default=0,
        help="untimed steps of the same path (or builds of the same cache) before each measurement of the paths, so "
        "that each is timed after itself, as in a training run (on a CPU, a step after another path with a larger "
        "footprint re-faults its memory: up to 20%% of a causal-LM step)",
    )
    parser.add_argument("--min_run_time", type=float, default=1.0, help="seconds per blocked_autorange")
    parser.add_argument("--teacher", default="resnet50", help="timm teacher of the vision setting")
    parser.add_argument("--student", default="resnet18", help="timm student of the vision setting")
    parser.add_argument("--batch_size", type=int, default=128, help="images per batch in the vision setting")
    parser.add_argument("--images", type=int, default=1024, help="generated CIFAR-shaped images")
    parser.add_argument("--lm_examples", type=int, default=4, help="rows of 512 tokens in the causal-LM setting")
    parser.add_argument("--text_layers", type=int, nargs=2, default=[6, 2], help="teacher and student layers")
    parser.add_argument("--num_workers", type=int, nargs="+", default=[0], help="data-loader workers to compare")
    parser.add_argument(
        "--variants", nargs="*", default=list(TEACHER_VARIANTS), choices=TEACHER_VARIANTS, help="teacher forwards"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, medians of ratios")
    for setting in args.settings:
        SETTINGS[setting](args)


if __name__ == "__main__":
    main()
