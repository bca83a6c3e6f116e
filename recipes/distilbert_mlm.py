"""Task-agnostic distillation during masked-LM training with DistilBERT's triple loss (Sanh et al., 2019).

The student is the teacher with every other layer (``student_from_teacher``) and learns, on the masked tokens drawn by
``DataCollatorForLanguageModeling``, from

    loss = soft_weight   * T² * KL(softmax(z_t / T) || softmax(z_s / T))     (masked tokens)
         + hard_weight   * CE(z_s, masked token)                             (the MLM loss, masked tokens)
         + cosine_weight * (1 - cos(h_s, h_t))                               (last hidden states, attended tokens)

with DistilBERT's weights 5.0 / 2.0 / 1.0 and T = 2 by default. The soft and hard terms are the trainer's own
(``--soft_weight``, ``--hard_weight``, ``--temperature``); the cosine term is ``HiddenStateCosineTerm``.

Launch:

    # BERT-base -> 6-layer student on WikiText-103 (needs the Hugging Face Hub); DistilBERT used lr 5e-4 and
    # batches of ~4k examples through gradient accumulation
    python recipes/distilbert_mlm.py --teacher_model_name_or_path bert-base-uncased \\
        --dataset_name Salesforce/wikitext --dataset_config_name wikitext-103-raw-v1 --output_dir out/distilbert \\
        --per_device_train_batch_size 32 --gradient_accumulation_steps 16 --learning_rate 5e-4 --warmup_ratio 0.05 \\
        --max_steps 100000 --eval_strategy steps --eval_steps 5000 --bf16

    # local text files, one text per line (or csv / json / parquet with a text column); other loss weights
    python recipes/distilbert_mlm.py --teacher_model_name_or_path path/to/bert_mlm \\
        --train_file corpus.txt --validation_file heldout.txt --soft_weight 1.0 --hard_weight 1.0 \\
        --cosine_weight 0.5 --output_dir out/mlm
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    set_seed,
)

from hf_distill import DistillationTrainer, DistillationTrainingArguments, HiddenStateCosineTerm
from hf_distill.data.text import limit, load_text_dataset, select_splits, tokenize_for_mlm
from hf_distill.students import student_from_teacher

# DistilBERT's loss weights (alpha_ce, alpha_mlm) and temperature; cosine_weight defaults to its alpha_cos.
DISTILBERT_DEFAULTS = {"soft_weight": 5.0, "hard_weight": 2.0, "temperature": 2.0}


@dataclass
class ModelArguments:
    teacher_model_name_or_path: str = field(
        default="bert-base-uncased", metadata={"help": "Teacher with a trained masked-LM head: Hub id or folder."}
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Teacher layers the student copies, e.g. 0 2 4; default every other layer."}
    )
    cosine_weight: float = field(
        default=1.0, metadata={"help": "Weight of the cosine loss between last hidden states (0 turns it off)."}
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default="Salesforce/wikitext", metadata={"help": "Hub dataset id, save_to_disk folder or shipped dataset."}
    )
    dataset_config_name: str | None = field(default="wikitext-103-raw-v1", metadata={"help": "Hub dataset config."})
    train_file: str | None = field(default=None, metadata={"help": "Local txt/csv/json/parquet training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local evaluation file, same format."})
    text_column: str | None = field(default=None, metadata={"help": "Text column; default text, sentence, ..."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per training block."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked (80/10/10 as BERT)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training texts."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation texts."})


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, DistillationTrainingArguments]:
    """Parse ``argv`` with DistilBERT's loss weights and temperature as defaults."""
    parser = HfArgumentParser((ModelArguments, DataArguments, DistillationTrainingArguments))
    parser.set_defaults(**DISTILBERT_DEFAULTS)
    return parser.parse_args_into_dataclasses(args=argv)


def load_mlm_teacher(name_or_path: str):
    """The teacher as ``AutoModelForMaskedLM``; a checkpoint without a trained MLM head is refused, not re-drawn."""
    teacher, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(
            f"{name_or_path} has no trained masked-LM head (missing weights: "
            f"{sorted(info['missing_keys'])}); a teacher for MLM distillation needs one."
        )
    return teacher


def build_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: DistillationTrainingArguments
) -> DistillationTrainer:
    """Teacher, half-depth student, masked-LM data and the triple loss, ready to ``train()``."""
    # ---- Model ----
    tokenizer = AutoTokenizer.from_pretrained(model_args.teacher_model_name_or_path)
    teacher = load_mlm_teacher(model_args.teacher_model_name_or_path)
    student = student_from_teacher(teacher, model_args.student_layers)

    # ---- Dataset ----
    raw = load_text_dataset(
        data_args.dataset_name, data_args.dataset_config_name, data_args.train_file, data_args.validation_file
    )
    train_raw, eval_raw = select_splits(raw, require_eval=False)
    train_dataset = tokenize_for_mlm(
        limit(train_raw, data_args.max_train_samples), tokenizer, data_args.text_column, data_args.max_seq_length
    )
    eval_dataset = None
    if eval_raw is not None:
        eval_dataset = tokenize_for_mlm(
            limit(eval_raw, data_args.max_eval_samples), tokenizer, data_args.text_column, data_args.max_seq_length
        )
    # Masks are drawn per batch (dynamic masking, as RoBERTa and DistilBERT): labels are -100 except at masked tokens,
    # so the trainer's soft and hard terms count exactly the masked positions.
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=data_args.mlm_probability)

    # ---- Training ----
    extra_terms = [HiddenStateCosineTerm(model_args.cosine_weight)] if model_args.cosine_weight > 0 else []
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        extra_loss_terms=extra_terms,
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    set_seed(training_args.seed)
    trainer = build_trainer(model_args, data_args, training_args)
    train_result = trainer.train()
    trainer.save_model()  # the student and the teacher's tokenizer
    trainer.save_state()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    metrics = dict(train_result.metrics)
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        # the hard term is the student's MLM cross-entropy on masked tokens
        metrics["eval_perplexity"] = math.exp(metrics["eval_hard_loss"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    return metrics


if __name__ == "__main__":
    main()
