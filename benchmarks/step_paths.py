"""Every training path of one setting, timed in one process: plain training and online distillation as a hand-written
PyTorch loop and through the trainers, distillation from a full and from a top-k teacher cache, the teacher forward
alone, the cache build, the data loading per step and the peak memory; then the targets of `benchmarks/speed.py`.

A step is what the Trainer does per optimizer step without gradient accumulation (forward, loss, backward, gradient
clipping at `max_grad_norm`, optimizer and scheduler step, zero grad), timed on a batch already in memory; the
hand-written loops do the same with the same optimizer (fused AdamW, the Trainer's default). The data loading per
step is timed apart, drawing batches from each path's data loader, and added for the targets.
"""

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from loss_memory import profiled_bytes
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_distill import DistillationTrainer, DistillationTrainingArguments

EPOCHS = (1, 3, 10)  # of the target for training from a cache, build included


# ---- Trainers, loops and steps ----


def make_trainer(model, dataset, batch_size: int, teacher=None, plain: bool = False, num_workers: int = 0, **fields):
    """A plain `Trainer` or a `DistillationTrainer` ready for `train_step` (optimizer and scheduler created)."""
    cls = TrainingArguments if plain else DistillationTrainingArguments
    collator = fields.pop("data_collator", None)
    args = cls(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=batch_size,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        save_strategy="no",
        dataloader_pin_memory=False,
        dataloader_num_workers=num_workers,
        dataloader_persistent_workers=num_workers > 0,
        learning_rate=1e-3,
        **fields,
    )
    if plain:
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    else:
        trainer = DistillationTrainer(model, args, collator, dataset, teacher_model=teacher)
    trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
    trainer.current_gradient_accumulation_steps = 1  # set by `Trainer.train`, read by `training_step`
    return trainer


def train_step(trainer: Trainer, batch: dict[str, Any]) -> None:
    """One optimizer step of `trainer` on `batch`, as `Trainer.train` runs it without gradient accumulation."""
    trainer.model.train()
    batch = trainer._prepare_inputs(batch)
    trainer.training_step(trainer.model, batch)
    trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    trainer.optimizer.zero_grad()


def first_batch(trainer: Trainer) -> dict[str, Any]:
    return next(iter(trainer.get_train_dataloader()))


def loader_steps(trainer: Trainer, steps: int, train: bool = False, warmup: int = 0) -> Callable[[], float]:
    """A measure: seconds per batch drawn from the trainer's data loader, only loading it or, with `train=True`, also
    training on it (the wall time of a step, over `steps` batches, the loader restarted at its end). Loading alone is
    timed over a whole epoch, its start included (accelerate's loader fetches a batch ahead, so single draws would
    take two fetches at an epoch's start and none at its end), after `warmup` untimed epochs (as `timed` does for
    steps: batches of a cache's logits are large enough to re-fault their memory after another path's)."""
    loader = trainer.get_train_dataloader()
    if not train:

        def epoch() -> float:
            for _ in range(warmup):
                sum(1 for _ in loader)
            start, batches = time.perf_counter(), sum(1 for _ in loader)
            return (time.perf_counter() - start) / batches

        return epoch
    iterator = iter(loader)

    def measure() -> float:
        nonlocal iterator
        start = time.perf_counter()
        for _ in range(steps):
            batch = next(iterator, None)
            if batch is None:
                iterator = iter(loader)
                batch = next(iterator)
            train_step(trainer, batch)
        return (time.perf_counter() - start) / steps

    return measure


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> Callable[[], float]:
    """A measure: seconds per call of `fn`, over `repeats` calls after `warmup` untimed ones (so that a training
    step is timed in the memory state its own path leaves, as in a run of that path, not the one another path left)."""

    def measure() -> float:
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats

    return measure


def hand_kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float):
    """Hinton's loss as a user writes it: `alpha * T² * KL(teacher_T || student_T) + (1 - alpha) * CE`, averaged over
    the labelled examples or tokens (`(N, C)` logits, `(N,)` labels with -100 for the uncounted)."""
    counted = labels != -100
    student, teacher = student[counted], teacher[counted]
    student_log_probs, teacher_log_probs = (F.log_softmax(x / temperature, -1) for x in (student, teacher))
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student, labels[counted])


@dataclass
class HandLoop:
    """A hand-written training loop: `logits(model, batch)` and `labels(batch)` give `(N, C)` logits and `(N,)`
    labels (a causal LM's shifted), `plain_loss(model, batch)` the loss of plain training; with a `teacher`, Hinton's
    loss."""

    model: nn.Module
    logits: Callable[[nn.Module, dict], torch.Tensor]
    labels: Callable[[dict], torch.Tensor]
    plain_loss: Callable[[nn.Module, dict], torch.Tensor]
    teacher: nn.Module | None = None
    alpha: float = 0.5
    temperature: float = 2.0
    max_grad_norm: float = 1.0
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LinearLR(self.optimizer, 1.0, 0.0, total_iters=10**6)
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)

    def step(self, batch: dict[str, Any]) -> None:
        self.model.train()
        if self.teacher is None:
            loss = self.plain_loss(self.model, batch)
        else:
            with torch.no_grad():
                teacher = self.logits(self.teacher, batch)
            student = self.logits(self.model, batch)
            loss = hand_kd_loss(student, teacher, self.labels(batch), self.alpha, self.temperature)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()


# ---- One setting ----

BUILD = "cache build, full logits"
EXP = "torch.exp over one float32 logits tensor"


@dataclass
class Setting:
    """What `measure_paths` needs of a setting.

    Attributes:
        make_student: a fresh student (same initial weights each call).
        teacher: the teacher, frozen.
        dataset: the training data of the plain and online paths, as the recipes give it.
        build_cache: `build_cache(teacher, top_k, rows)` → the cache of the dataset `rows` (`top_k=None`: full
            logits).
        cache_source: the dataset the caches are built from.
        cache_collator: the data collator of the cache paths (`None`: the trainer's default).
        wrap_plain: the student as `transformers.Trainer` calls it (keywords in, a loss out).
        hand: `(logits, labels, plain_loss)` of :class:`HandLoop`.
        batch_size, top_k: per step, of the top-k cache.
    """

    make_student: Callable[[], nn.Module]
    teacher: nn.Module
    dataset: datasets.Dataset
    build_cache: Callable[[nn.Module, int | None, datasets.Dataset], datasets.Dataset]
    cache_source: datasets.Dataset
    cache_collator: Any
    wrap_plain: Callable[[nn.Module], nn.Module]
    hand: tuple[Callable, Callable, Callable]
    batch_size: int
    top_k: int


def measure_paths(setting: Setting, args, logits_numel: int | None = None) -> None:
    """Print ms per step, loading ms per step and peak memory of every path of `setting`, then the targets.

    With `logits_numel` (the elements of one batch's student logits), peak memory is also given in units of one
    float32 logits tensor."""
    size = setting.batch_size
    builds, caches = {}, {}
    for name, top_k in (("full", None), ("top-k", setting.top_k)):
        start = time.perf_counter()
        caches[name] = setting.build_cache(setting.teacher, top_k, setting.cache_source)
        builds[name] = time.perf_counter() - start
    plain = make_trainer(setting.wrap_plain(setting.make_student()), setting.dataset, size, plain=True)
    online = make_trainer(setting.make_student(), setting.dataset, size, setting.teacher)
    full, topk = (
        make_trainer(setting.make_student(), caches[name], size, data_collator=setting.cache_collator)
        for name in ("full", "top-k")
    )
    hand_plain = HandLoop(setting.make_student(), *setting.hand)
    distillation = online.args
    hand_online = HandLoop(
        setting.make_student(), *setting.hand, setting.teacher, distillation.alpha, distillation.temperature
    )
    batch, full_batch, topk_batch = (first_batch(trainer) for trainer in (plain, full, topk))
    teacher_inputs = {key: value for key, value in batch.items() if key != "labels"}

    def teacher_forward() -> None:
        with torch.no_grad():
            online.get_teacher_outputs(teacher_inputs, None)

    steps = {
        "plain, hand-written loop": lambda: hand_plain.step(batch),
        "plain, Trainer": lambda: train_step(plain, batch),
        "online, hand-written loop": lambda: hand_online.step(batch),
        "online, DistillationTrainer": lambda: train_step(online, batch),
        "full cache, DistillationTrainer": lambda: train_step(full, full_batch),
        f"top-{setting.top_k} cache, DistillationTrainer": lambda: train_step(topk, topk_batch),
        "teacher forward alone": teacher_forward,
    }
    # Builds of one and of two batches, timed in the rounds like the steps (after as many untimed builds as a step
    # has untimed steps): their difference is the cost of a batch, the rest the fixed cost of a build (the teacher's
    # weights hashed, the record written).
    builds_of = {}
    for count in (1, 2):
        rows = setting.cache_source.select(range(count * size))
        build = lambda rows=rows: setting.build_cache(setting.teacher, None, rows)  # noqa: E731
        builds_of[count] = timed(build, 1, args.warmup_steps)
    loaders = {"dataset": plain, "full cache": full, "top-k cache": topk}
    measures = {name: timed(step, args.steps, args.warmup_steps) for name, step in steps.items()}
    loads = {name: loader_steps(trainer, args.steps, warmup=args.warmup_steps) for name, trainer in loaders.items()}
    measures.update({f"load {name}": measure for name, measure in loads.items()})
    measures.update({f"{BUILD} of {count} batch(es)": measure for count, measure in builds_of.items()})
    if logits_numel:  # what one pass of exponentials over the logits costs: the loss over the vocabulary takes several
        logits, exps = torch.randn(logits_numel), torch.empty(logits_numel)
        measures[EXP] = timed(lambda: torch.exp(logits, out=exps), args.steps)
    for measure in measures.values():  # warm-up: optimizer states, allocator, caches of the first calls
        measure()
    peaks = {name: profiled_bytes(step)[0] for name, step in steps.items()}
    load_of = {name: "load dataset" for name in steps if name != "teacher forward alone"}  # (the build: none)
    load_of["full cache, DistillationTrainer"] = "load full cache"
    load_of[f"top-{setting.top_k} cache, DistillationTrainer"] = "load top-k cache"
    rounds, names = [], list(measures)
    for index in range(args.rounds):  # each round starts at another path, so that none always follows the same one
        order = names[index % len(names) :] + names[: index % len(names)]
        times = {name: measures[name]() for name in order}
        times.update({f"{name} + loading": times[name] + times[load] for name, load in load_of.items()})
        rounds.append(times)

    def median(key: str) -> float:
        return statistics.median(times[key] for times in rounds)

    unit = f"{'peak / logits':>15}" if logits_numel else ""
    print(f"    {'path':<38}{'ms/step':>9}{'loading':>9}{'peak MB':>9}{unit}")
    for name in steps:
        loads = median(load_of[name]) * 1e3 if name in load_of else 0.0
        row = f"    {name:<38}{median(name) * 1e3:9.1f}{loads:9.1f}{peaks[name] / 2**20:9.1f}"
        print(row + (f"{peaks[name] / (logits_numel * 4):15.3f}" if logits_numel else ""))
    examples = len(setting.cache_source)
    for name, seconds in builds.items():
        per_batch = seconds / examples * size * 1e3
        print(
            f"    cache build, {name}: {seconds:.2f} s for {examples} examples ({per_batch:.1f} ms per batch of "
            f"{size}, first calls included); {caches[name].data.nbytes / 2**20:.1f} MB in Arrow"
        )
    batches = len(setting.cache_source) / size
    for times in rounds:
        one, two = times[f"{BUILD} of 1 batch(es)"], times[f"{BUILD} of 2 batch(es)"]
        times[BUILD], times[f"{BUILD}, fixed"] = two - one, 2 * one - two  # a batch, and the rest
        times[f"{BUILD}, per batch of this dataset"] = times[BUILD] + times[f"{BUILD}, fixed"] / batches
    ratio = statistics.median(times[BUILD] / times["teacher forward alone"] for times in rounds)
    print(
        f"    {BUILD}, in the rounds (builds of 1 and 2 batches): {median(BUILD) * 1e3:.1f} ms per batch "
        f"({ratio:.3f} x the teacher forward alone), {median(f'{BUILD}, fixed') * 1e3:.1f} ms per build"
    )
    if logits_numel:
        ratio = statistics.median(times[EXP] / times["plain, Trainer"] for times in rounds)
        print(
            f"    {EXP}: {median(EXP) * 1e3:.1f} ms, {ratio:.3f} of a plain Trainer step (the soft and hard "
            "losses together, per element: forward KL 2 in the forward pass and none in the backward (the trainer "
            "announces the weights), top-k bucket 1 and 1; at T other than 1 and 2, 1 more in the forward pass and "
            "forward KL 1 in the backward)"
        )
    print_targets(rounds, setting)


def print_targets(rounds: list[dict[str, float]], setting: Setting) -> None:
    """The targets, each the median over the rounds of a ratio taken within one round; every training path's step
    with its data loading; the build, per batch, a batch and a share of the fixed cost of building this dataset."""
    plain, online = "plain, Trainer + loading", "online, DistillationTrainer + loading"
    full, topk = (
        "full cache, DistillationTrainer + loading",
        f"top-{setting.top_k} cache, DistillationTrainer + loading",
    )
    teacher = "teacher forward alone"
    checks: list[tuple[str, Callable[[dict[str, float]], float], float]] = [
        (
            "online DistillationTrainer / (plain Trainer + teacher forward)",
            lambda t: t[online] / (t[plain] + t[teacher]),
            1.03,
        ),
        ("plain: Trainer / hand-written loop", lambda t: t[plain] / t["plain, hand-written loop + loading"], 1.05),
        (
            "online: DistillationTrainer / hand-written loop",
            lambda t: t[online] / t["online, hand-written loop + loading"],
            1.05,
        ),
        ("full cache / plain Trainer", lambda t: t[full] / t[plain], 1.05),
        ("top-k cache / plain Trainer", lambda t: t[topk] / t[plain], 1.05),
    ]
    for e in EPOCHS:
        checks.append(
            (
                f"{e} epoch(s) from the full cache with its build / (plain + teacher forward / {e})",
                lambda t, e=e: (t[full] + t[f"{BUILD}, per batch of this dataset"] / e) / (t[plain] + t[teacher] / e),
                1.0,
            )
        )
    print("    targets (medians over the rounds of ratios within a round)")
    for name, ratio, limit in checks:
        value = statistics.median(ratio(times) for times in rounds)
        print(f"      {name:<82}{value:6.3f}  <= {limit:.2f}  {'met' if value <= limit else 'MISSED'}")
