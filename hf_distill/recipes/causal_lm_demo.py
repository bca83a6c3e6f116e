"""The offline demo of the causal-LM recipe: a small teacher trained here on synthetic additions, then, over seeds and
with the same optimizer steps, a student trained on the data alone, an off-policy and an on-policy distilled one."""

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, set_seed

from .. import DistillationTrainer, DistillationTrainingArguments
from ..data.arithmetic import addition_splits, arithmetic_tokenizer
from ..evaluation.training import use_cpu_threads
from ..modeling import count_parameters
from ..on_policy import left_pad, split_prompts
from .causal_lm import CausalLMArguments, CompletionCollator, tokenize_dataset
from .causal_lm_report import write_demo_report

# The demo's defaults: prepended to the command line by `--offline_demo`, so that any option given overrides them.
DEMO_ARGS = [
    "--output_dir", "out/causal_lm_demo", "--learning_rate", "3e-3", "--per_device_train_batch_size", "64",
    "--max_steps", "300", "--warmup_steps", "30", "--lr_scheduler_type", "cosine", "--alpha", "0.5",
    "--temperature", "1.0", "--distillation_loss", "forward_kl", "--logging_steps", "100", "--save_strategy", "no",
    "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true",
]  # fmt: skip


@dataclass
class DemoArguments:
    """Sizes of the offline demo (`--offline_demo`)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of the student runs."})
    digits: int = field(default=2, metadata={"help": "Largest number of digits of each addend."})
    demo_train_size: int = field(default=3000, metadata={"help": "Additions in the training set."})
    demo_test_size: int = field(default=300, metadata={"help": "Held-out additions (perplexity and accuracy)."})
    teacher_steps: int = field(default=800, metadata={"help": "Optimizer steps of the teacher's training."})
    demo_lmbda: float = field(default=0.5, metadata={"help": "lmbda of the on-policy student (GKD)."})
    cpu_threads: int | None = field(default=1, metadata={"help": "torch.set_num_threads for the demo; None: unset."})


def _gpt2(tokenizer: Any, layers: int, width: int, heads: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=width, n_layer=layers, n_head=heads,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def teacher_model(tokenizer: Any, seed: int = 0) -> GPT2LMHeadModel:
    """3 layers of width 96."""
    return _gpt2(tokenizer, layers=3, width=96, heads=4, seed=seed)


def student_model(tokenizer: Any, seed: int) -> GPT2LMHeadModel:
    """2 layers of width 48: about a sixth of the teacher's parameters."""
    return _gpt2(tokenizer, layers=2, width=48, heads=2, seed=seed)


@torch.no_grad()
def evaluate_lm(model: GPT2LMHeadModel, dataset: Any, collator: CompletionCollator, max_new_tokens: int) -> dict:
    """Perplexity of the completions (end-of-sequence included) under teacher forcing; exact-match accuracy of the
    greedy completions of the prompts; greedy generation throughput (generated tokens per second, one batch of 100)."""
    model.eval()
    nll, tokens, correct, generated, seconds = 0.0, 0, 0, 0, 0.0
    for start in range(0, len(dataset), 100):
        batch = collator([dataset[i] for i in range(start, min(start + 100, len(dataset)))])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        nll += torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="sum").item()
        tokens += int((labels != -100).sum())
        prompts = split_prompts(batch["input_ids"], batch["attention_mask"], batch["labels"])
        prompt_ids, prompt_mask = left_pad(prompts, collator.pad_token_id)
        started = time.perf_counter()
        output = model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens, do_sample=False
        )
        seconds += time.perf_counter() - started
        completions = output[:, prompt_ids.shape[1] :]
        generated += completions.numel()
        for row, completion in enumerate(completions):
            expected = batch["labels"][row][batch["labels"][row] != -100].tolist()
            correct += completion[: len(expected)].tolist() == expected
    return {
        "perplexity": math.exp(nll / tokens),
        "accuracy": correct / len(dataset),
        "generation_tokens_per_s": generated / seconds,
        "parameters": count_parameters(model),
    }


def _train(model, args, teacher, data, collator, tokenizer) -> float:
    trainer = DistillationTrainer(
        model=model, args=args, data_collator=collator, train_dataset=data, teacher_model=teacher,
        processing_class=tokenizer,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def run_demo(demo: DemoArguments, training_args: DistillationTrainingArguments) -> dict:
    """Train the teacher, then the three students per seed; write report.json and report.md; return the report."""
    use_cpu_threads(demo.cpu_threads)
    started, started_cpu = time.perf_counter(), time.process_time()
    output_dir = Path(training_args.output_dir)
    tokenizer = arithmetic_tokenizer()
    train_raw, test_raw = addition_splits(demo.digits, demo.demo_train_size, demo.demo_test_size)
    data_args = CausalLMArguments(max_length=64)
    train, test = tokenize_dataset(train_raw, tokenizer, data_args), tokenize_dataset(test_raw, tokenizer, data_args)
    collator = CompletionCollator(tokenizer.pad_token_id)
    max_new_tokens = demo.digits + 2  # the longest sum and the end of sequence

    # ---- Teacher: trained here on the labels alone, then frozen ----
    set_seed(0)
    teacher = teacher_model(tokenizer)
    teacher_args = dataclasses.replace(
        training_args, output_dir=str(output_dir / "teacher"), max_steps=demo.teacher_steps, alpha=0.0, lmbda=0.0
    )
    teacher_seconds = _train(teacher, teacher_args, None, train, collator, tokenizer)
    results: dict[str, Any] = {"teacher": {**evaluate_lm(teacher, test, collator, max_new_tokens)}}
    results["teacher"]["train_seconds"] = teacher_seconds

    # ---- Students: same initialisation per seed, same data, same optimizer steps ----
    roles = {
        "data only": dict(alpha=0.0, lmbda=0.0),
        "off-policy KD": dict(lmbda=0.0),
        "on-policy KD": dict(lmbda=demo.demo_lmbda, max_new_tokens=max_new_tokens),
    }
    runs: dict[str, list[dict]] = {role: [] for role in roles}
    for seed in demo.seeds:
        for role, overrides in roles.items():
            set_seed(seed)
            student = student_model(tokenizer, seed)
            folder = str(output_dir / "runs" / f"{role.replace(' ', '_')}_seed{seed}")
            args = dataclasses.replace(training_args, output_dir=folder, seed=seed, data_seed=seed, **overrides)
            teacher_for_run = teacher if args.alpha > 0 else None
            seconds = _train(student, args, teacher_for_run, train, collator, tokenizer)
            metrics = evaluate_lm(student, test, collator, max_new_tokens)
            runs[role].append({"seed": seed, "train_seconds": seconds, **metrics})
    report = {
        "task": f"addition of numbers of up to {demo.digits} digits, sum written least-significant digit first",
        "train_examples": len(train),
        "test_examples": len(test),
        "student_steps": training_args.max_steps,
        "teacher_steps": demo.teacher_steps,
        "settings": {
            "alpha": training_args.alpha,
            "temperature": training_args.temperature,
            "distillation_loss": training_args.distillation_loss,
            "lmbda": demo.demo_lmbda,
            "learning_rate": training_args.learning_rate,
            "batch_size": training_args.per_device_train_batch_size,
            "cpu_threads": demo.cpu_threads,
        },
        "teacher": results["teacher"],
        "runs": runs,
        "summary": {role: _mean_std(entries) for role, entries in runs.items()},
    }
    # CPU time beside wall time: on a machine shared with other jobs the wall time says little about the demo.
    report["total_seconds"] = time.perf_counter() - started
    report["total_cpu_seconds"] = time.process_time() - started_cpu
    return write_demo_report(report, output_dir)


def _mean_std(entries: list[dict]) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation (ddof=1; None for one seed) of each metric over seeds."""
    summary = {}
    for key in ("perplexity", "accuracy", "generation_tokens_per_s", "parameters", "train_seconds"):
        values = np.array([entry[key] for entry in entries], dtype=float)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None}
    return summary
