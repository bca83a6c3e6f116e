"""Tiny models and datasets built in code, shared by the tests; nothing here touches the network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel  # noqa: E402

from hf_distill import DistillationTrainingArguments  # noqa: E402

NUM_LABELS = 3
VOCAB_SIZE = 40


def tiny_bert(
    num_labels: int = NUM_LABELS, seed: int = 0, layers: int = 2, hidden_size: int = 16
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def tiny_gpt2(vocab_size: int = VOCAB_SIZE, seed: int = 0, layers: int = 2) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=32,
        n_embd=16,
        n_layer=layers,
        n_head=2,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
    )
    return GPT2LMHeadModel(config)


class TinyCNN(torch.nn.Module):
    """A timm-like classifier: takes an image tensor, returns logits."""

    def __init__(self, num_classes: int = NUM_LABELS, width: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        )
        self.head = torch.nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def text_dataset(n: int = 32, seq_len: int = 8, num_labels: int = NUM_LABELS, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    return Dataset.from_dict(
        {
            "input_ids": torch.randint(0, VOCAB_SIZE, (n, seq_len), generator=generator).tolist(),
            "labels": torch.randint(0, num_labels, (n,), generator=generator).tolist(),
        }
    )


def lm_dataset(n: int = 16, seq_len: int = 10, seed: int = 0) -> Dataset:
    """Token sequences whose labels are the inputs, with a random tail of each row ignored (-100)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB_SIZE, (n, seq_len), generator=generator)
    labels = input_ids.clone()
    keep = torch.randint(3, seq_len + 1, (n,), generator=generator)
    labels[torch.arange(seq_len)[None, :] >= keep[:, None]] = -100
    return Dataset.from_dict({"input_ids": input_ids.tolist(), "labels": labels.tolist()})


def prompt_completion_dataset(n: int = 16, width: int = 12, seed: int = 0) -> Dataset:
    """Right-padded rows of a random prompt (2-4 tokens, labels -100) and completion (2-5 tokens, labelled)."""
    generator = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for _ in range(n):
        prompt, completion = torch.randint(2, 5, (2,), generator=generator).tolist()
        completion += 1
        ids = torch.randint(0, VOCAB_SIZE, (prompt + completion,), generator=generator).tolist()
        padding = width - prompt - completion
        rows["input_ids"].append(ids + [0] * padding)
        rows["attention_mask"].append([1] * (prompt + completion) + [0] * padding)
        rows["labels"].append([-100] * prompt + ids[prompt:] + [-100] * padding)
    return Dataset.from_dict(rows)


def image_dataset(n: int = 16, num_labels: int = NUM_LABELS, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    return Dataset.from_dict(
        {
            "pixel_values": torch.randn(n, 3, 8, 8, generator=generator).tolist(),
            "labels": torch.randint(0, num_labels, (n,), generator=generator).tolist(),
        }
    ).with_format("torch")


def make_args(output_dir, **overrides) -> DistillationTrainingArguments:
    defaults = dict(
        output_dir=str(output_dir),
        max_steps=3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        alpha=0.7,
        temperature=4.0,
    )
    defaults.update(overrides)
    return DistillationTrainingArguments(**defaults)


@pytest.fixture
def args_factory(tmp_path):
    return lambda **overrides: make_args(tmp_path / "out", **overrides)
