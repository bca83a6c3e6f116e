"""The teacher → student-from-scratch → distilled-student comparison over seeds, shared by recipes and the demo."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from accelerate import PartialState
from torch import nn
from transformers import set_seed

from ..config import DistillationTrainingArguments
from ..trainer import DistillationTrainer
from .ablation import DATA_KEYS, DISTILLATION_ONLY_KEYS, ablation_entry, check_settings, parse_setting
from .benchmark import benchmark_model, device_description
from .plots import (
    plot_confusion_matrices,
    plot_learning_curves,
    plot_per_class_error,
    plot_temperature_effect,
    soft_label_entropy,
)
from .report import build_report, format_summary, model_entry, prediction_metrics, write_report
from .teacher_settings import save_teacher_settings, training_settings


@dataclass
class ComparisonArguments:
    """What the comparison runs besides the training arguments.

    Args:
        seeds: seeds of the student runs; each seed trains one student from scratch and one distilled student.
        teacher_epochs: epochs to train the teacher when none is given (default: `num_train_epochs`).
        teacher_learning_rate: learning rate of the teacher run (default: `learning_rate`).
        ablation: extra settings, each `key=value[,key=value]` over the training arguments (e.g. `temperature=1`,
            `alpha=0.5`, `num_train_epochs=5`) or `max_train_samples=N` (fewer labelled images; the teacher is
            retrained on them). Each is compared scratch vs distilled over the same seeds.
        entropy_temperatures: temperatures at which the teacher's soft-label entropy is reported and plotted.
        benchmark_batch_size: batch size of the throughput measurement.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of the student runs."})
    teacher_epochs: float | None = field(
        default=None, metadata={"help": "Epochs of the teacher run (default: num_train_epochs)."}
    )
    teacher_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the teacher run (default: learning_rate)."}
    )
    ablation: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra settings 'key=value[,key=value]' compared scratch vs distilled, e.g. temperature=1."},
    )
    entropy_temperatures: list[float] = field(
        default_factory=lambda: [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0],
        metadata={"help": "Temperatures for the teacher soft-label entropy plot."},
    )
    benchmark_batch_size: int = field(default=64, metadata={"help": "Batch size of the throughput measurement."})


@dataclass
class ComparisonSetup:
    """The task-specific pieces the comparison is run on.

    Attributes:
        make_teacher, make_student: build a fresh untrained model (called after `set_seed`).
        train_dataset, eval_dataset: datasets of model-ready rows with `labels`.
        class_names: one name per class.
        make_inputs: `n -> inputs of a batch of n` for the latency / throughput benchmark.
        make_train_dataset: `max_train_samples -> train dataset`, needed by `max_train_samples` ablations.
        save_model: `(model, folder) -> None`, saves a trained model so that it can be reloaded.
        teacher: a trained teacher; `None` trains one with `make_teacher`.
        teacher_name, student_name: names shown in the report.
        teacher_settings: what the teacher was trained with, as recorded beside it (`.teacher_settings`): for a
            teacher trained here, the settings it is trained with (saved with it); for a given teacher, its
            recorded settings, or `None` when unknown. The report states these, not this run's arguments.
        teacher_origin: how the teacher came to be, for reports and cards (e.g. "trained locally by this recipe").
        teacher_hub_id: the teacher's Hub id (`owner/name`) when it is used as loaded from the Hub, else `None`.
    """

    make_teacher: Callable[[], nn.Module]
    make_student: Callable[[], nn.Module]
    train_dataset: Any
    eval_dataset: Any
    class_names: list[str]
    make_inputs: Callable[[int], Any]
    teacher_name: str
    student_name: str
    dataset_name: str
    save_model: Callable[[nn.Module, str], None]
    teacher: nn.Module | None = None
    make_train_dataset: Callable[[int], Any] | None = None
    task: str = "image-classification"
    notes: list[str] = field(default_factory=list)
    teacher_settings: dict[str, Any] | None = None
    teacher_origin: str | None = None
    teacher_hub_id: str | None = None


def train(
    model: nn.Module,
    args: DistillationTrainingArguments,
    train_dataset: Any,
    eval_dataset: Any,
    teacher: nn.Module | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train `model` with the distillation trainer (`alpha=0` and no teacher: plain cross-entropy).

    Returns the trained (unwrapped) model and its `trainer.state.log_history`.
    """
    trainer = DistillationTrainer(
        model=model, teacher_model=teacher, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset
    )
    trainer.train()
    return trainer.model, list(trainer.state.log_history)


def predict_logits(
    model: nn.Module, args: DistillationTrainingArguments, dataset: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and labels (N,) of `model` on `dataset`, gathered over processes in dataset order."""
    args = dataclasses.replace(args, alpha=0.0, eval_strategy="no", report_to="none")
    output = DistillationTrainer(model=model, args=args, eval_dataset=dataset).predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return np.asarray(logits), np.asarray(output.label_ids)


def teacher_arguments(
    args: DistillationTrainingArguments, options: ComparisonArguments, name: str = "teacher"
) -> DistillationTrainingArguments:
    """Arguments of a teacher trained from scratch: labels only (`alpha=0`), its own epochs and learning rate."""
    return dataclasses.replace(
        args,
        output_dir=os.path.join(args.output_dir, name),
        alpha=0.0,
        num_train_epochs=options.teacher_epochs or args.num_train_epochs,
        learning_rate=options.teacher_learning_rate or args.learning_rate,
    )


def remove_empty_folders(root: str) -> None:
    """Delete the empty folders under `root` (the per-run output folders of runs that saved nothing)."""
    for folder, _, files in os.walk(root, topdown=False):
        if folder != root and not files and not os.listdir(folder):
            os.rmdir(folder)


class Comparison:
    """Runs the three models over seeds and writes the report (main process only) into `args.output_dir`.

    `output_dir` ends up holding `report.json`, `report.md`, the plots, the distilled student of the first seed
    (`config.json`, `model.safetensors`), every seed's distilled student in `student_distilled/seed-N/` and a
    teacher trained here in `teacher/`.
    """

    def __init__(self, setup: ComparisonSetup, args: DistillationTrainingArguments, options: ComparisonArguments):
        names = {f.name for f in dataclasses.fields(args)}
        check_settings(options.ablation, names, setup.make_train_dataset is not None)
        if not options.seeds:
            raise ValueError("The comparison needs at least one seed.")
        self.setup, self.args, self.options = setup, args, options
        self.state = PartialState()
        self.teacher_settings = setup.teacher_settings
        if setup.teacher is None and self.teacher_settings is None:
            self.teacher_settings = training_settings(teacher_arguments(args, options))

    def _args(self, name: str, **overrides: Any) -> DistillationTrainingArguments:
        return dataclasses.replace(self.args, output_dir=os.path.join(self.args.output_dir, name), **overrides)

    def train_teacher(self, train_dataset: Any, name: str = "teacher") -> tuple[nn.Module, list[dict[str, Any]]]:
        """Train a teacher from scratch with plain cross-entropy (`alpha=0`), seeded with `args.seed`."""
        set_seed(self.args.seed)
        args = teacher_arguments(self.args, self.options, name)
        return train(self.setup.make_teacher(), args, train_dataset, self.setup.eval_dataset)

    def run_students(
        self,
        teacher: nn.Module,
        teacher_predictions: np.ndarray,
        train_dataset: Any,
        tag: str,
        overrides: dict[str, Any],
        with_scratch: bool = True,
    ) -> dict[str, list[dict[str, Any]]]:
        """For each seed: a student from scratch (`alpha=0`) and a distilled one, same budget; eval metrics each."""
        runs: dict[str, list[dict[str, Any]]] = {"student_scratch": [], "student_distilled": []}
        roles = ("student_scratch", "student_distilled") if with_scratch else ("student_distilled",)
        for seed in self.options.seeds:
            for role in roles:
                distil = role == "student_distilled"
                args = self._args(f"{tag}/{role}-seed{seed}", seed=seed, save_strategy="no", **overrides)
                if not distil:
                    args = dataclasses.replace(args, alpha=0.0)
                set_seed(seed)
                model, history = train(
                    self.setup.make_student(),
                    args,
                    train_dataset,
                    self.setup.eval_dataset,
                    teacher if distil else None,
                )
                logits, labels = predict_logits(model, args, self.setup.eval_dataset)
                metrics = prediction_metrics(
                    logits.argmax(-1), labels, len(self.setup.class_names), teacher_predictions
                )
                runs[role].append({"seed": seed, "model": model, "history": history, **metrics})
        return runs

    def run(self) -> dict[str, Any]:
        """Teacher (given or trained), students over seeds, optional ablation; returns the report dict."""
        setup, out = self.setup, self.args.output_dir
        start = time.perf_counter()
        teacher, teacher_history = setup.teacher, []
        if teacher is None:
            teacher, teacher_history = self.train_teacher(setup.train_dataset)
            if self.state.is_main_process:
                setup.save_model(teacher, os.path.join(out, "teacher"))
                # what a later run compares before reusing this teacher
                save_teacher_settings(os.path.join(out, "teacher"), self.teacher_settings)
        teacher_time = time.perf_counter() - start
        teacher_logits, labels = predict_logits(teacher, self._args("teacher"), setup.eval_dataset)
        teacher_predictions = teacher_logits.argmax(-1)
        teacher_metrics = prediction_metrics(teacher_predictions, labels, len(setup.class_names), teacher_predictions)
        runs = self.run_students(teacher, teacher_predictions, setup.train_dataset, "students", {})
        students_time = time.perf_counter() - start - teacher_time
        ablation = [
            self.run_setting(s, teacher, teacher_predictions, teacher_metrics["accuracy"], runs)
            for s in self.options.ablation
        ]
        if self.state.is_main_process:
            for run in runs["student_distilled"]:
                setup.save_model(run["model"], os.path.join(out, "student_distilled", f"seed-{run['seed']}"))
            # The first seed's distilled student also at the top, next to report.json: the folder is then a model
            # repository that `hf-distill card` / `hf-distill push` take as it is.
            setup.save_model(runs["student_distilled"][0]["model"], out)
        report = None
        if self.state.is_main_process:
            timings = {
                "teacher_s": teacher_time,
                "students_s": students_time,
                "ablation_s": time.perf_counter() - start - teacher_time - students_time,
            }
            report = self.write(teacher, teacher_metrics, teacher_history, teacher_logits, runs, ablation, timings)
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            remove_empty_folders(out)
        return report

    def run_setting(
        self,
        setting: str,
        teacher: nn.Module,
        teacher_predictions: np.ndarray,
        teacher_accuracy: float,
        base: dict[str, list[dict]],
    ) -> dict[str, Any]:
        """One ablation entry: teacher accuracy, mean / std accuracy of scratch and distilled students."""
        overrides = parse_setting(setting)
        data = {k: overrides.pop(k) for k in DATA_KEYS if k in overrides}
        train_dataset, tag = self.setup.train_dataset, "ablation/" + setting.replace("=", "-").replace(",", "_")
        if data:  # fewer labels: teacher and students alike only see the subset
            train_dataset = self.setup.make_train_dataset(data["max_train_samples"])
            teacher, _ = self.train_teacher(train_dataset, f"{tag}/teacher")
            logits, labels = predict_logits(teacher, self._args(tag), self.setup.eval_dataset)
            teacher_predictions = logits.argmax(-1)
            teacher_accuracy = float(np.mean(teacher_predictions == labels))
        reuse_scratch = not data and set(overrides) <= set(DISTILLATION_ONLY_KEYS)
        runs = self.run_students(teacher, teacher_predictions, train_dataset, tag, overrides, not reuse_scratch)
        if reuse_scratch:
            runs["student_scratch"] = base["student_scratch"]
        return ablation_entry(setting, len(train_dataset), teacher_accuracy, runs, reuse_scratch)

    def write(
        self,
        teacher: nn.Module,
        teacher_metrics: dict,
        teacher_history: list,
        teacher_logits: np.ndarray,
        runs: dict[str, list[dict]],
        ablation: list[dict],
        timings: dict[str, float],
    ) -> dict[str, Any]:
        """Benchmark the models, draw the plots and write report.json / report.md; returns the report."""
        setup, out, options = self.setup, self.args.output_dir, self.options
        batch = options.benchmark_batch_size
        cost = {"teacher": benchmark_model(teacher, setup.make_inputs, batch).to_dict()}
        for role in ("student_scratch", "student_distilled"):
            cost[role] = benchmark_model(runs[role][0]["model"], setup.make_inputs, batch).to_dict()
        names = {
            "teacher": setup.teacher_name,
            "student_scratch": setup.student_name,
            "student_distilled": setup.student_name,
        }
        models = {"teacher": model_entry(names["teacher"], [teacher_metrics], cost["teacher"])}
        for role in ("student_scratch", "student_distilled"):
            models[role] = model_entry(names[role], runs[role], cost[role])
        temperatures = list(options.entropy_temperatures)
        entropy = soft_label_entropy(teacher_logits, temperatures)
        histories = {"teacher": [teacher_history]} if teacher_history else {}  # none for a given teacher
        histories.update({role: [run["history"] for run in runs[role]] for role in runs})
        plots = {
            "learning_curves.png": lambda p: plot_learning_curves(histories, p),
            "confusion_matrices.png": lambda p: plot_confusion_matrices(
                {r: np.asarray(m["confusion_matrix"]) for r, m in models.items()},
                setup.class_names,
                p,
                {r: len(m["accuracies"]) for r, m in models.items()},
            ),
            "per_class_error.png": lambda p: plot_per_class_error(
                {r: m["per_class_error"] for r, m in models.items()}, setup.class_names, p
            ),
            "temperature_entropy.png": lambda p: plot_temperature_effect(
                teacher_logits, temperatures, p, setup.class_names
            ),
        }
        for filename, draw in plots.items():
            draw(os.path.join(out, filename))
        # The teacher's budget as recorded when it was trained, not this run's arguments: a reused or given teacher
        # may have been trained for other epochs. Left out when unknown.
        recorded = self.teacher_settings or {}
        teacher_budget = {
            "teacher_epochs": recorded.get("teacher_epochs"),
            "teacher_max_steps": recorded.get("max_steps"),
        }
        distillation = {
            "alpha": self.args.alpha,
            "temperature": self.args.temperature,
            "loss": self.args.distillation_loss,
            "epochs": self.args.num_train_epochs,
            **{key: value for key, value in teacher_budget.items() if value is not None},
            "learning_rate": self.args.learning_rate,
            "batch_size": self.args.per_device_train_batch_size,
            "processes": self.state.num_processes,
            "train_examples": len(setup.train_dataset),
            "eval_examples": len(setup.eval_dataset),
            "seeds": list(options.seeds),
        }
        teacher_entry = {
            "name": setup.teacher_name,
            "origin": setup.teacher_origin,
            "hub_id": setup.teacher_hub_id,
            "settings": self.teacher_settings,
        }
        report = build_report(
            setup.task,
            setup.dataset_name,
            setup.class_names,
            distillation,
            models,
            device_description(next(teacher.parameters()).device),
            ablation=ablation or None,
            temperature_entropy={
                "temperatures": temperatures,
                "entropy": entropy.tolist(),
                "max_entropy": float(np.log(len(setup.class_names))),
            },
            plots=list(plots),
            timings=timings,
            notes=setup.notes,
            teacher=teacher_entry,
        )
        write_report(report, out)
        print(format_summary(report, out))
        return report
