"""The teacher → student-from-scratch → distilled-student comparison over seeds and settings, shared by recipes."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from accelerate import PartialState
from torch import nn
from transformers import set_seed

from ..config import DistillationTrainingArguments
from .ablation import DATA_KEYS, DISTILLATION_ONLY_KEYS, METHOD_KEY, ablation_entry, check_settings, parse_setting
from .arguments import ComparisonArguments, ComparisonSetup
from .generations import run_generations
from .methods import DistillationMethod, check_methods, parse_method
from .outputs import ComparisonResults, write_comparison
from .report import prediction_metrics
from .settings import SAME_DATA, TRANSFER_SET, setting_entry, training_labels, transfer_split
from .teacher_settings import save_teacher_settings, training_settings
from .training import (
    budget_steps,
    labels_only,
    predict_logits,
    remove_empty_folders,
    teacher_arguments,
    train,
    use_cpu_threads,
)

__all__ = ["Comparison", "ComparisonArguments", "ComparisonSetup", "predict_logits", "teacher_arguments", "train"]

ROLES = ("student_scratch", "student_distilled")
# seed -> role -> the training set of that role's run
DataForSeed = Callable[[int], dict[str, Any]]


class Comparison:
    """Runs the teacher, then per setting and seed a student from scratch and a distilled one, and writes the report
    (main process only) into `args.output_dir`.

    The settings (`settings.py`): the same data for both students, and with `labelled_fraction` a transfer set.
    Every student run, in every setting and for both roles, trains for the same number of optimizer steps: the
    same-data setting's budget, `max_steps` when given, else `num_train_epochs` over the whole labelled training set
    (`training.budget_steps`). Within a seed the two students share the seed and the data, so the comparison is
    paired: `statistics.paired_difference` gives the mean difference and its 95% t-interval. The ablation runs
    further settings on the same data. The distilled students learn by `options.method` (`methods.py`; fresh loss
    terms per run), and with `options.generations` > 1 further born-again generations follow the same-data setting
    (`generations.py`).

    `output_dir` ends up holding `report.json`, `report.md`, the plots, the distilled student of the first seed
    (`config.json`, `model.safetensors`), every seed's same-data distilled student in `student_distilled/seed-N/`
    and a teacher trained here in `teacher/`.
    """

    def __init__(self, setup: ComparisonSetup, args: DistillationTrainingArguments, options: ComparisonArguments):
        names = {f.name for f in dataclasses.fields(args)}
        check_settings(options.ablation, names, setup.make_train_dataset is not None)
        if options.labelled_fraction is not None:
            training_labels(setup.train_dataset)  # a training set whose labels can be hidden, checked before training
        self.setup, self.args, self.options = setup, args, options
        self.method = options.parsed_method()
        self.callbacks: list = []  # Trainer callbacks of every run, e.g. a step timer
        self._check_methods()
        self.collator = setup.data_collator
        self.state = PartialState()
        self.teacher_settings = setup.teacher_settings
        if setup.teacher is None and self.teacher_settings is None:
            self.teacher_settings = training_settings(teacher_arguments(args, options))

    def setting_method(self, name: str | None) -> DistillationMethod:
        """The method of an ablation setting's `method=`, or the run's method."""
        options = self.options
        return self.method if name is None else parse_method(name, options.student_modules, options.teacher_modules)

    def _check_methods(self) -> None:
        """Every method of the run (`method=` ablation settings too) against the training arguments and the module
        paths of the models, before any training."""
        names = [parse_setting(s).get(METHOD_KEY) for s in self.options.ablation]
        methods = [self.method, *(self.setting_method(str(n)) for n in names if n is not None)]
        setup = self.setup
        teacher = setup.teacher if setup.teacher is not None else setup.make_teacher
        check_methods(methods, self.args, setup.make_student, teacher, self.options.generations > 1)

    def distilled_args(
        self, args: DistillationTrainingArguments, method: DistillationMethod
    ) -> DistillationTrainingArguments:
        """`args` of a distilled run with `method`'s teacher term."""
        return dataclasses.replace(args, **method.training_overrides(args))

    def _args(self, name: str, **overrides: Any) -> DistillationTrainingArguments:
        return dataclasses.replace(self.args, output_dir=os.path.join(self.args.output_dir, name), **overrides)

    def student_steps(self, train_examples: int, overrides: dict[str, Any]) -> int:
        """Optimizer steps of each student run of a setting whose labelled training set has `train_examples`."""
        args = dataclasses.replace(self.args, **overrides) if overrides else self.args
        return budget_steps(args, train_examples, self.state.num_processes)

    def train_teacher(
        self, train_dataset: Any, name: str = "teacher", max_steps: int | None = None
    ) -> tuple[nn.Module, list[dict[str, Any]]]:
        """Train a teacher from scratch with plain cross-entropy (`alpha=0`), seeded with `args.seed`, for its own
        epochs or `max_steps` optimizer steps."""
        set_seed(self.args.seed)
        args = teacher_arguments(self.args, self.options, name)
        if max_steps is not None:
            args = dataclasses.replace(args, max_steps=max_steps)
        return train(self.setup.make_teacher(), args, train_dataset, self.setup.eval_dataset, None, self.collator)

    def run_students(
        self,
        teacher: nn.Module,
        teacher_predictions: np.ndarray,
        data: DataForSeed,
        tag: str,
        overrides: dict[str, Any],
        roles: tuple[str, ...] = ROLES,
        method: DistillationMethod | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """For each seed: a student from scratch (`alpha=0`, no teacher) and a distilled one (by `method`, default
        the run's), each on its training set `data(seed)[role]` with the same arguments; the eval metrics of each on
        every eval example."""
        runs: dict[str, list[dict[str, Any]]] = {role: [] for role in ROLES}
        for seed in self.options.seeds:
            datasets = data(seed)
            for role in roles:
                teacher_of_run = teacher if role == "student_distilled" else None
                run = self.run_student(
                    role, seed, teacher_of_run, datasets[role], tag, overrides, teacher_predictions, method
                )
                runs[role].append(run)
        return runs

    def run_student(
        self,
        role: str,
        seed: int,
        teacher: nn.Module | None,
        train_dataset: Any,
        tag: str,
        overrides: dict[str, Any],
        teacher_predictions: np.ndarray,
        method: DistillationMethod | None = None,
    ) -> dict[str, Any]:
        """One student run in `<output_dir>/<tag>/<role>-seed<seed>`: from scratch without a teacher (`alpha=0`),
        else distilled from `teacher` by `method` (default the run's) with fresh loss terms; its eval metrics."""
        args = self._args(f"{tag}/{role}-seed{seed}", seed=seed, save_strategy="no", **overrides)
        set_seed(seed)
        student, terms = self.setup.make_student(), []
        if teacher is None:
            args = labels_only(args)
        else:
            method = method or self.method
            args = self.distilled_args(args, method)
            terms = method.make_terms(student, teacher)  # projections are trained per run: never shared
        model, history = train(
            student,
            args,
            train_dataset,
            self.setup.eval_dataset,
            teacher,
            self.collator,
            extra_loss_terms=terms,
            callbacks=self.callbacks,
        )
        logits, labels = predict_logits(model, args, self.setup.eval_dataset, self.collator)
        metrics = prediction_metrics(logits.argmax(-1), labels, len(self.setup.class_names), teacher_predictions)
        return {"seed": seed, "model": model, "history": history, **metrics}

    def method_entry(self, overrides: dict[str, Any], method: DistillationMethod | None = None) -> dict[str, Any]:
        """The report's statement of the distilled students' method, under a setting's `overrides`."""
        method = method or self.method
        args = dataclasses.replace(self.args, **overrides) if overrides else self.args
        return method.describe(self.distilled_args(args, method))

    def run(self) -> dict[str, Any]:
        """Teacher (given or trained), both settings' students over seeds, optional ablation; returns the report."""
        setup, out = self.setup, self.args.output_dir
        use_cpu_threads(self.options.cpu_threads)
        start = time.perf_counter()
        teacher, teacher_history = setup.teacher, []
        if teacher is None:
            teacher, teacher_history = self.train_teacher(setup.train_dataset)
            if self.state.is_main_process:
                setup.save_model(teacher, os.path.join(out, "teacher"))
                # what a later run compares before reusing this teacher
                save_teacher_settings(os.path.join(out, "teacher"), self.teacher_settings)
        teacher_time = time.perf_counter() - start
        teacher_logits, labels = predict_logits(teacher, self._args("teacher"), setup.eval_dataset, self.collator)
        teacher_predictions = teacher_logits.argmax(-1)
        teacher_metrics = prediction_metrics(teacher_predictions, labels, len(setup.class_names), teacher_predictions)
        teacher_accuracy = teacher_metrics["accuracy"]
        steps = self.student_steps(len(setup.train_dataset), {})
        same_data = dict.fromkeys(ROLES, setup.train_dataset)
        runs = self.run_students(
            teacher, teacher_predictions, lambda seed: same_data, "students", {"max_steps": steps}
        )
        method = self.method_entry({})
        settings = [
            setting_entry(SAME_DATA, runs, len(setup.train_dataset), 0, steps, teacher_accuracy, len(labels), method)
        ]
        generations = run_generations(self, runs, teacher_predictions, steps, teacher_accuracy, method)
        if self.options.labelled_fraction is not None:
            settings.append(self.run_transfer_set(teacher, teacher_predictions, teacher_accuracy, steps, len(labels)))
        students_time = time.perf_counter() - start - teacher_time
        ablation = [
            self.run_setting(s, teacher, teacher_predictions, teacher_accuracy, runs) for s in self.options.ablation
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
            results = ComparisonResults(
                teacher, teacher_metrics, teacher_history, teacher_logits, runs, settings, ablation, timings
            )
            results.generations = generations
            report = write_comparison(
                setup, self.args, self.options, self.teacher_settings, self.state.num_processes, results
            )
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            remove_empty_folders(out)
        return report

    def run_transfer_set(
        self,
        teacher: nn.Module,
        teacher_predictions: np.ndarray,
        teacher_accuracy: float,
        steps: int,
        eval_examples: int,
    ) -> dict[str, Any]:
        """The transfer-set setting: per seed a class-stratified labelled part drawn with that seed; the student from
        scratch trains on it, the distilled one on it plus the rest of the training set without labels."""
        fraction = self.options.labelled_fraction
        splits = {seed: transfer_split(self.setup.train_dataset, fraction, seed) for seed in self.options.seeds}
        overrides: dict[str, Any] = {"max_steps": steps}
        if not self.args.load_best_model_at_end:  # scored once at the end; the learning curves are the same data's
            overrides["eval_strategy"] = "no"
        runs = self.run_students(
            teacher,
            teacher_predictions,
            lambda seed: {"student_scratch": splits[seed].labelled, "student_distilled": splits[seed].transfer},
            "transfer_set",
            overrides,
        )
        split = splits[self.options.seeds[0]]
        return setting_entry(
            TRANSFER_SET,
            runs,
            split.labelled_examples,
            split.unlabelled_examples,
            steps,
            teacher_accuracy,
            eval_examples,
            self.method_entry(overrides),
        )

    def run_setting(
        self,
        setting: str,
        teacher: nn.Module,
        teacher_predictions: np.ndarray,
        teacher_accuracy: float,
        base: dict[str, list[dict]],
    ) -> dict[str, Any]:
        """One ablation entry on the same data: teacher accuracy, scratch and distilled students, paired difference.

        Budgets are counted in optimizer steps over the whole training set, as in the settings: with the setting's
        own arguments (`num_train_epochs=1` trains fewer steps), and as many steps on fewer labelled examples
        (`max_train_samples`, for which the teacher is retrained with its own budget in steps too).
        """
        overrides = parse_setting(setting)
        method_name = overrides.pop(METHOD_KEY, None)
        method = self.setting_method(None if method_name is None else str(method_name))
        data = {k: overrides.pop(k) for k in DATA_KEYS if k in overrides}
        train_dataset, tag = self.setup.train_dataset, "ablation/" + setting.replace("=", "-").replace(",", "_")
        examples = len(self.setup.train_dataset)
        if data:  # fewer labels: teacher and students alike only see the subset
            train_dataset = self.setup.make_train_dataset(data["max_train_samples"])
            teacher_steps = budget_steps(
                teacher_arguments(self.args, self.options), examples, self.state.num_processes
            )
            teacher, _ = self.train_teacher(train_dataset, f"{tag}/teacher", teacher_steps)
            logits, labels = predict_logits(teacher, self._args(tag), self.setup.eval_dataset, self.collator)
            teacher_predictions = logits.argmax(-1)
            teacher_accuracy = float(np.mean(teacher_predictions == labels))
        reuse_scratch = not data and set(overrides) <= set(DISTILLATION_ONLY_KEYS)
        steps = self.student_steps(examples, overrides)
        roles = ("student_distilled",) if reuse_scratch else ROLES
        same_data = dict.fromkeys(ROLES, train_dataset)
        runs = self.run_students(
            teacher, teacher_predictions, lambda seed: same_data, tag, {**overrides, "max_steps": steps}, roles, method
        )
        if reuse_scratch:
            runs["student_scratch"] = base["student_scratch"]
        described = self.method_entry(overrides, method)
        return ablation_entry(setting, len(train_dataset), teacher_accuracy, runs, reuse_scratch, steps, described)
