"""The causal-LM recipe: prompt masking of prompt / completion and chat rows, the recipe on a local teacher folder, the
offline demo end to end on tiny settings, and training from a top-k cache of the demo's teacher."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from hf_distill import DistillationTrainer
from hf_distill.data.arithmetic import addition_splits, arithmetic_tokenizer
from hf_distill.recipes.causal_lm import CausalLMArguments, CompletionCollator, tokenize_dataset, tokenize_row
from hf_distill.recipes.causal_lm_demo import student_model, teacher_model
from tests.conftest import make_args

SCRIPT = Path(__file__).resolve().parent.parent / "recipes" / "causal_lm.py"
# The assistant's turn opens with "=": the generation prompt.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}= {% endif %}{{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}= {% endif %}"
)


def _recipe():
    spec = importlib.util.spec_from_file_location("recipe_causal_lm_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_prompt_tokens_are_excluded_from_every_loss():
    tokenizer = arithmetic_tokenizer()
    row = tokenize_row({"prompt": "1 2 + 3 =", "completion": "5 1"}, tokenizer, CausalLMArguments())
    prompt = tokenizer("1 2 + 3 =")["input_ids"]
    completion = [*tokenizer("5 1", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert row["input_ids"] == prompt + completion
    assert row["labels"] == [-100] * len(prompt) + completion


def test_chat_rows_use_the_template_and_label_only_the_last_message():
    tokenizer = arithmetic_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    messages = [{"role": "user", "content": "1 + 2"}, {"role": "assistant", "content": "3"}]
    row = tokenize_row({"messages": messages}, tokenizer, CausalLMArguments())
    prompt = tokenizer("1 + 2 =", add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == prompt + tokenizer("3", add_special_tokens=False)["input_ids"]
    assert row["labels"] == [-100] * len(prompt) + row["input_ids"][len(prompt) :]
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"  # no generation prompt
    messages = [{"role": "user", "content": "1 + 2"}, {"role": "assistant", "content": "3"}]
    assert tokenize_row({"messages": messages}, tokenizer, CausalLMArguments())["labels"][:3] == [-100] * 3


def test_a_dataset_without_the_columns_is_refused():
    with pytest.raises(ValueError, match="'prompt' and 'completion' columns"):
        tokenize_dataset(Dataset.from_dict({"text": ["1 + 2"]}), arithmetic_tokenizer(), CausalLMArguments())


def test_the_collator_pads_on_the_right_and_masks_padding():
    batch = CompletionCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_the_recipe_distils_a_local_teacher_folder_on_a_jsonl_file(tmp_path):
    tokenizer = arithmetic_tokenizer()
    teacher_dir = tmp_path / "teacher"
    teacher_model(tokenizer).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    train, test = addition_splits(1, 40, 10)
    train.to_json(tmp_path / "train.jsonl")
    test.to_json(tmp_path / "test.jsonl")
    metrics = _recipe().main([
        "--teacher_model_name_or_path", str(teacher_dir), "--student_layers", "0", "2",
        "--train_file", str(tmp_path / "train.jsonl"), "--validation_file", str(tmp_path / "test.jsonl"),
        "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--use_cpu", "true", "--report_to", "none", "--lmbda", "0.5", "--max_new_tokens", "3",
    ])  # fmt: skip
    assert metrics["eval_loss"] > 0 and "eval_soft_loss" in metrics
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_the_offline_demo_runs_end_to_end_on_tiny_settings(tmp_path):
    report = _recipe().main([
        "--offline_demo", "--output_dir", str(tmp_path), "--seeds", "0", "1", "--digits", "1",
        "--demo_train_size", "48", "--demo_test_size", "16", "--teacher_steps", "3", "--max_steps", "2",
        "--per_device_train_batch_size", "16",
    ])  # fmt: skip
    written = json.loads((tmp_path / "report.json").read_text())
    assert set(written["summary"]) == {"data only", "off-policy KD", "on-policy KD"}
    for role in ("off-policy KD", "on-policy KD"):
        assert written["differences"][role]["accuracy"]["ci95"] is not None  # two seeds: an interval
    assert written["teacher"]["parameters"] > written["summary"]["data only"]["parameters"]["mean"]
    assert "| student, on-policy KD |" in (tmp_path / "report.md").read_text()
    assert report["findings"] == written["findings"] and len(report["findings"]) == 4


def test_the_student_trains_from_a_top_k_cache_of_the_demo_teacher_without_the_teacher(tmp_path):
    from hf_distill.teachers.cache import cache_teacher_outputs

    tokenizer = arithmetic_tokenizer()
    train, _ = addition_splits(1, 32, 4)
    train = tokenize_dataset(train, tokenizer, CausalLMArguments())
    collator = CompletionCollator(tokenizer.pad_token_id)
    cache = cache_teacher_outputs(teacher_model(tokenizer), train, top_k=4, data_collator=collator, batch_size=8)
    assert {"teacher_topk_values", "teacher_topk_indices"} <= set(cache.column_names)
    student = student_model(tokenizer, seed=0)
    before = {name: value.clone() for name, value in student.state_dict().items()}
    trainer = DistillationTrainer(
        model=student, args=make_args(tmp_path, max_steps=2, alpha=0.5), data_collator=collator,
        train_dataset=cache, teacher_model=None,
    )  # fmt: skip
    trainer.train()
    assert trainer.teacher_model is None
    assert any(entry.get("soft_loss", 0) > 0 for entry in trainer.state.log_history)
    assert any(not torch.equal(before[name], value) for name, value in student.state_dict().items())
