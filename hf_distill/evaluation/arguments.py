"""What a comparison is run with: its own arguments, and the task-specific set-up a recipe builds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .methods import PARTS, DistillationMethod, parse_method


@dataclass
class ComparisonArguments:
    """What the comparison runs besides the training arguments.

    Args:
        seeds: seeds of the student runs; each seed trains one student from scratch and one distilled student per
            setting, and the two are compared seed by seed (a paired difference with its 95% t-interval).
        labelled_fraction: also run the transfer-set setting: this share of the training set keeps its labels
            (class-stratified, drawn per seed). The student from scratch trains on that part alone; the distilled
            student on that part plus the rest of the training set without labels (label -100: soft loss only).
            The teacher is the one trained on the whole labelled set. `None`: the same-data setting only.
        teacher_epochs: epochs to train the teacher when none is given (default: `num_train_epochs`).
        teacher_learning_rate: learning rate of the teacher run (default: `learning_rate`).
        ablation: extra settings, each `key=value[,key=value]` over the training arguments (e.g. `temperature=1`,
            `alpha=0.5`, `num_train_epochs=5`) or `max_train_samples=N` (fewer labelled images, for as many optimizer
            steps; the teacher is retrained on them). Each is compared scratch vs distilled over the same seeds.
        entropy_temperatures: temperatures at which the teacher's soft-label entropy is reported and plotted.
        benchmark_batch_size: batch size of the throughput measurement.
        cpu_threads: threads of PyTorch's CPU operations in each process (`torch.set_num_threads`), set when the
            comparison starts; `None` keeps PyTorch's default (one per core). Small models on a CPU shared with other
            jobs run several times faster on one thread than on threads that wait for each other.
        method: how the distilled students learn from their teacher (`methods.py`): `kd`, `dkd`, `dist`, `kd+ls`
            (logit standardization), `fitnet`, `at`, `rkd`, `sp`, or a sum such as `dkd+at`. The teacher term's
            settings come from the training arguments (`temperature`, `dkd_beta`, ...); a method without a logit
            part trains on labels and feature terms only.
        student_modules, teacher_modules: module paths of the feature methods, paired by position (e.g. `layer3`,
            timm's `stages.2`); default: each method's paths on ResNet-style models.
        generations: born-again generations (Furlanello et al., 2018) in the same-data setting: generation 1 is
            the distilled student of the teacher, generation g + 1 a fresh student distilled from generation g's
            student of the same seed, with the same method, data and budget. 1: no further generation.
    """

    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "Seeds of the student runs (at least 2 for a CI)."}
    )
    labelled_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Also run the transfer-set setting: this share of the training set keeps its labels; the "
            "distilled student also trains on the rest without labels. Default: the same-data setting only."
        },
    )
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
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "PyTorch CPU threads per process (torch.set_num_threads); default one per core."},
    )

    method: str = field(
        default="kd",
        metadata={
            "help": f"Distillation method: parts among {', '.join(PARTS)} joined by '+', e.g. kd, dkd, kd+ls, at, "
            "dkd+at. Without kd/dkd/dist, labels and feature terms only."
        },
    )
    student_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Student module paths of the feature methods, e.g. layer3 (default: ResNet-style ones)."},
    )
    teacher_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Teacher module paths, paired by position with --student_modules."},
    )
    generations: int = field(
        default=1,
        metadata={"help": "Born-again generations: each generation's distilled student teaches the next one."},
    )

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("The comparison needs at least one seed.")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must differ from each other, got {self.seeds}.")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {self.cpu_threads}.")
        if self.labelled_fraction is not None and not 0 < self.labelled_fraction < 1:
            raise ValueError(f"labelled_fraction must be in (0, 1), got {self.labelled_fraction}.")
        if not (isinstance(self.generations, int) and self.generations >= 1):
            raise ValueError(f"generations must be an integer >= 1, got {self.generations!r}.")
        parse_method(self.method, self.student_modules, self.teacher_modules)  # an unknown part fails here

    def parsed_method(self) -> DistillationMethod:
        """The parsed `method`, with the module paths given."""
        return parse_method(self.method, self.student_modules, self.teacher_modules)


@dataclass
class ComparisonSetup:
    """The task-specific pieces the comparison is run on.

    Attributes:
        make_teacher, make_student: build a fresh untrained model (called after `set_seed`).
        train_dataset, eval_dataset: datasets of model-ready rows with `labels` (a `datasets.Dataset` for the
            transfer-set setting, which rewrites the `labels` column). Every eval row is scored.
        class_names: one name per class.
        make_inputs: `n -> inputs of a batch of n` for the latency / throughput benchmark.
        make_train_dataset: `max_train_samples -> train dataset`, needed by `max_train_samples` ablations.
        data_collator: batches rows for every run (e.g. `DataCollatorWithPadding` for texts of different lengths);
            `None`: the Trainer's default, for rows of one shape.
        save_model: `(model, folder) -> None`, saves a trained model so that it can be reloaded.
        teacher: a trained teacher; `None` trains one with `make_teacher`.
        teacher_name, student_name: names shown in the report.
        teacher_settings: what the teacher was trained with, as recorded beside it (`.teacher_settings`): for a
            teacher trained here, the settings it is trained with (saved with it); for a given teacher, its
            recorded settings, or `None` when unknown. The report states these, not this run's arguments.
        teacher_origin: how the teacher came to be, for reports and cards (e.g. "trained locally by this recipe").
        teacher_hub_id: the teacher's Hub id (`owner/name`) when it is used as loaded from the Hub, else `None`.
        teacher_trained_on_train_set: whether a given teacher was trained on exactly `train_dataset` with all its
            labels (`None`: not known). A teacher the comparison trains is.
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
    teacher_trained_on_train_set: bool | None = None
    data_collator: Callable | None = None
