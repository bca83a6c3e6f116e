"""What `recipes/causal_lm.py` shares: its arguments, prompt / completion and chat data tokenized with the prompt
excluded from every loss, and the collator that pads such rows."""

from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset, DatasetDict, load_dataset

IGNORE_INDEX = -100


@dataclass
class CausalLMArguments:
    """Model and data of the causal-LM recipe."""

    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Teacher causal LM: a Hub id or a local folder (its tokenizer serves both)."}
    )
    student_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Student causal LM sharing the teacher's tokenizer; else built from the teacher's layers."},
    )
    student_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Teacher layers the student is built from (default: every other layer)."},
    )
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset with the training rows."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration of the Hub dataset."})
    train_file: str | None = field(default=None, metadata={"help": "Local json / jsonl / csv / parquet file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local evaluation file, same format."})
    train_split: str = field(default="train", metadata={"help": "Split of the Hub dataset to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Split of the Hub dataset to evaluate on."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column of prompts (with completion_column)."})
    completion_column: str = field(default="completion", metadata={"help": "Column of completions."})
    messages_column: str = field(
        default="messages",
        metadata={"help": "Column of chat messages (role / content); the last one is the completion."},
    )
    max_length: int = field(default=1024, metadata={"help": "Longest tokenized row; longer rows are truncated."})
    offline_demo: bool = field(
        default=False,
        metadata={"help": "Run the offline demo: train a small teacher on synthetic additions, compare students."},
    )


def _ids(encoded: Any) -> list[int]:
    """Token ids from `apply_chat_template(tokenize=True)`, which returns a list or a dict by version."""
    return list(encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded)


def tokenize_row(row: dict[str, Any], tokenizer: Any, args: CausalLMArguments) -> dict[str, list[int]]:
    """One row as `input_ids` and `labels`, -100 on the prompt so that only the completion is learnt and scored.

    Chat rows (`messages_column`) use the tokenizer's chat template: the prompt is every message but the last, with
    the template's generation prompt; the completion is the rest of the full conversation. Prompt / completion rows
    are tokenized as `prompt` followed by `completion` and the end-of-sequence token.
    """
    if args.messages_column in row and row[args.messages_column] is not None:
        messages = row[args.messages_column]
        prompt = _ids(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True))
        full = _ids(tokenizer.apply_chat_template(messages, tokenize=True))
        if full[: len(prompt)] != prompt:
            raise ValueError(
                "The tokenizer's chat template does not render a conversation as its prompt (every message but the "
                "last, with the generation prompt) followed by the last message, so the prompt cannot be masked."
            )
        completion = full[len(prompt) :]
    else:
        prompt = tokenizer(row[args.prompt_column])["input_ids"]
        completion = tokenizer(row[args.completion_column], add_special_tokens=False)["input_ids"]
        completion = [*completion, tokenizer.eos_token_id]
    input_ids = (prompt + completion)[: args.max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + completion)[: args.max_length]
    return {"input_ids": input_ids, "labels": labels}


def tokenize_dataset(dataset: Dataset, tokenizer: Any, args: CausalLMArguments) -> Dataset:
    """`tokenize_row` over a dataset; checks the columns first."""
    chat = args.messages_column in dataset.column_names
    needed = [args.messages_column] if chat else [args.prompt_column, args.completion_column]
    missing = [name for name in needed if name not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset has columns {dataset.column_names}: expected a {args.messages_column!r} column of chat "
            f"messages, or {args.prompt_column!r} and {args.completion_column!r} columns."
        )
    return dataset.map(
        tokenize_row, fn_kwargs={"tokenizer": tokenizer, "args": args}, remove_columns=dataset.column_names
    )


def load_completion_data(args: CausalLMArguments, tokenizer: Any) -> tuple[Dataset, Dataset | None]:
    """The tokenized training and (optional) evaluation sets, from the Hub or local files."""
    if args.dataset_name is not None:
        raw = load_dataset(args.dataset_name, args.dataset_config)
        train, evaluation = raw[args.train_split], raw[args.eval_split] if args.eval_split else None
    elif args.train_file is not None:
        files = {"train": args.train_file, **({"validation": args.validation_file} if args.validation_file else {})}
        extension = args.train_file.rsplit(".", 1)[-1].replace("jsonl", "json")
        raw: DatasetDict = load_dataset(extension, data_files=files)
        train, evaluation = raw["train"], raw.get("validation")
    else:
        raise ValueError("Give --dataset_name or --train_file (or --offline_demo).")
    tokenized = tokenize_dataset(train, tokenizer, args)
    return tokenized, tokenize_dataset(evaluation, tokenizer, args) if evaluation is not None else None


class CompletionCollator:
    """Right-pads `input_ids` (with `pad_token_id`) and `labels` (with -100; rows without labels, such as those a
    teacher cache is computed from, give a batch without them) and builds the `attention_mask`."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            length = len(row["input_ids"])
            input_ids[index, :length] = torch.as_tensor(row["input_ids"])
            if "labels" in row:
                labels[index, :length] = torch.as_tensor(row["labels"])
            attention_mask[index, :length] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        return {**batch, "labels": labels} if all("labels" in row for row in rows) else batch
