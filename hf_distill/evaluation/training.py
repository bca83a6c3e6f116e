"""The single runs of a comparison: training one model, its predictions, the teacher's arguments, the step budget."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback

from ..config import DistillationTrainingArguments
from ..terms import LossTerm
from ..trainer import DistillationTrainer


def train(
    model: nn.Module,
    args: DistillationTrainingArguments,
    train_dataset: Any,
    eval_dataset: Any,
    teacher: nn.Module | None = None,
    data_collator: Callable | None = None,
    extra_loss_terms: list[LossTerm] | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train `model` with the distillation trainer (`alpha=0` and no teacher: plain cross-entropy).

    `data_collator` batches the rows (`None`: the Trainer's default); `extra_loss_terms` are added to the teacher
    and hard terms (e.g. a method's fresh `FeatureTerm`s); `callbacks` go to the Trainer. Returns the trained
    (unwrapped) model and its `trainer.state.log_history`.
    """
    trainer = DistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        data_collator=data_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        extra_loss_terms=extra_loss_terms,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer.model, list(trainer.state.log_history)


def labels_only(args: DistillationTrainingArguments, **changes: Any) -> DistillationTrainingArguments:
    """`args` for a model trained (or scored) on the labels alone, as a plain `Trainer` would: `alpha=0` and no
    explicit `soft_weight` / `hard_weight` (which would override `alpha`), plus `changes`."""
    return dataclasses.replace(args, alpha=0.0, soft_weight=None, hard_weight=None, **changes)


def predict_logits(
    model: nn.Module, args: DistillationTrainingArguments, dataset: Any, data_collator: Callable | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and labels (N,) of `model` on `dataset`, gathered over processes in dataset order."""
    args = labels_only(args, eval_strategy="no", report_to="none")
    trainer = DistillationTrainer(model=model, args=args, data_collator=data_collator, eval_dataset=dataset)
    output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return np.asarray(logits), np.asarray(output.label_ids)


def teacher_arguments(
    args: DistillationTrainingArguments, options: Any, name: str = "teacher"
) -> DistillationTrainingArguments:
    """Arguments of a teacher trained from scratch: labels only (see `labels_only`), its own epochs and learning
    rate.

    `options` is the comparison's `ComparisonArguments` (`teacher_epochs`, `teacher_learning_rate`).
    """
    return labels_only(
        args,
        output_dir=os.path.join(args.output_dir, name),
        num_train_epochs=options.teacher_epochs or args.num_train_epochs,
        learning_rate=options.teacher_learning_rate or args.learning_rate,
    )


def budget_steps(args: DistillationTrainingArguments, train_examples: int, processes: int = 1) -> int:
    """The optimizer steps of a student run: `args.max_steps` when set (> 0), else `num_train_epochs` over
    `train_examples`, as the Trainer counts them.

    `ceil(num_train_epochs · ceil(ceil(N / (per_device_batch · processes)) / gradient_accumulation_steps))`: one
    global batch of `per_device_train_batch_size · processes · gradient_accumulation_steps` examples a step.
    """
    if args.max_steps > 0:
        return int(args.max_steps)
    batches = math.ceil(train_examples / (args.per_device_train_batch_size * processes))
    steps_per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    return max(math.ceil(args.num_train_epochs * steps_per_epoch), 1)


def remove_empty_folders(root: str) -> None:
    """Delete the empty folders under `root` (the per-run output folders of runs that saved nothing)."""
    for folder, _, files in os.walk(root, topdown=False):
        if folder != root and not files and not os.listdir(folder):
            os.rmdir(folder)


def use_cpu_threads(threads: int | None) -> None:
    """`torch.set_num_threads(threads)` for this process's CPU operations; `None` leaves PyTorch's setting alone."""
    if threads is not None:
        torch.set_num_threads(threads)
