"""On-policy distillation (GKD) and sequence-level KD on tiny GPT-2 models: prompts, generated batches, the loss on
generated tokens only, `lmbda=0` as the off-policy run, refusals, and a two-process run."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.on_policy import completion_batch, left_pad, split_prompts
from hf_distill.students import student_from_teacher
from tests.conftest import make_args, prompt_completion_dataset, tiny_bert, tiny_gpt2
from tests.test_distributed import ENV, LAUNCH_TWO, ROOT

EOS = 7


def _models():
    teacher = tiny_gpt2(seed=3, layers=4)
    student = student_from_teacher(teacher, layers=[0, 2])
    for model in (teacher, student):
        model.generation_config.eos_token_id = EOS
        model.generation_config.bos_token_id = None
    return teacher, student


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    return {key: torch.as_tensor(value) for key, value in prompt_completion_dataset()[:n].items()}


def _weights(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_prompts_are_the_tokens_before_the_first_label():
    input_ids = torch.tensor([[5, 6, 7, 8, 0], [0, 0, 3, 4, 9], [1, 2, 3, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 0], [0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, 7, 8, -100], [-100, -100, -100, 4, 9], [1, 2, 3, -100, -100]])
    prompts = split_prompts(input_ids, attention_mask, labels)
    # right padding, left padding, and a row labelled from its first token (whose label no causal LM scores)
    assert [prompt.tolist() for prompt in prompts] == [[5, 6], [3], [1]]
    ids, mask = left_pad(prompts, pad_token_id=0)
    assert ids.tolist() == [[5, 6], [0, 3], [0, 1]] and mask.tolist() == [[1, 1], [0, 1], [0, 1]]


def test_completion_batch_labels_generated_tokens_up_to_the_first_eos():
    prompts = [torch.tensor([5, 6]), torch.tensor([3])]
    completions = torch.tensor([[9, EOS, 0, 0], [4, 4, 4, 4]])  # generate pads a finished row after its EOS
    batch = completion_batch(prompts, completions, [EOS], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 9, EOS, 0], [3, 4, 4, 4, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, -100, 9, EOS, -100], [-100, 4, 4, 4, 4]]


def test_an_on_policy_batch_is_the_students_completion_scored_on_generated_tokens_only(tmp_path):
    teacher, student = _models()
    alpha, temperature = 0.6, 2.0
    args = make_args(tmp_path, lmbda=1.0, max_new_tokens=6, alpha=alpha, temperature=temperature)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    original = _batch()
    [batch], num_items = trainer.get_batch_samples(iter([dict(original)]), 1, torch.device("cpu"))
    prompts = split_prompts(original["input_ids"], original["attention_mask"], original["labels"])
    for row, prompt in enumerate(prompts):
        length = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, : len(prompt)].tolist() == prompt.tolist()  # the prompt is kept ...
        assert (batch["labels"][row, : len(prompt)] == -100).all()  # ... and excluded from the loss
        generated = batch["input_ids"][row, len(prompt) : length]
        assert 1 <= len(generated) <= 6 and batch["labels"][row, len(prompt) : length].tolist() == generated.tolist()
        assert (batch["labels"][row, length:] == -100).all()
    assert int(num_items) == int((batch["labels"][:, 1:] != -100).sum())

    trainer._hard_term_off = id(batch) in trainer._student_generated
    assert trainer._hard_term_off and [term.name for term in trainer.active_loss_terms(True)] == ["soft"]
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        keep = batch["labels"][:, 1:] != -100  # generated tokens only
        s, t = student(**inputs).logits[:, :-1][keep], teacher(**inputs).logits[:, :-1][keep]
        kl = F.kl_div(
            F.log_softmax(s / temperature, -1),
            F.log_softmax(t / temperature, -1),
            log_target=True,
            reduction="batchmean",
        )
    torch.testing.assert_close(loss, alpha * temperature**2 * kl)  # the soft term alone: no hard term on samples


def test_seq_kd_batches_are_the_teachers_completions_with_the_hard_term(tmp_path):
    teacher, student = _models()
    # top_p this small keeps the most likely token only: the teacher's greedy completion
    args = make_args(tmp_path, seq_kd=True, max_new_tokens=4, generation_top_p=1e-6)
    teacher.generation_config.pad_token_id = 0
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    original = _batch(4)
    [batch], _ = trainer.get_batch_samples(iter([dict(original)]), 1, torch.device("cpu"))
    assert not trainer._student_generated
    prompts = split_prompts(original["input_ids"], original["attention_mask"], original["labels"])
    for row, prompt in enumerate(prompts):
        # token 0 is also the padding id: the explicit mask keeps generate from masking prompt tokens equal to it
        whole = torch.ones_like(prompt[None])
        greedy = teacher.generate(prompt[None], attention_mask=whole, max_new_tokens=4, do_sample=False)
        greedy = greedy[0, len(prompt) :]
        length = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, len(prompt) : length].tolist() == greedy[: length - len(prompt)].tolist()
    assert [term.name for term in trainer.active_loss_terms(True)] == ["soft", "hard"]


def _train(tmp_path, name, **overrides):
    teacher, student = _models()
    args = make_args(tmp_path / name, max_steps=3, learning_rate=5e-3, **overrides)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, train_dataset=prompt_completion_dataset(), args=args
    )
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry], _weights(student)


def test_lmbda_zero_is_exactly_the_off_policy_run(tmp_path):
    off_losses, off_weights = _train(tmp_path, "off")
    zero_losses, zero_weights = _train(tmp_path, "zero", lmbda=0.0, max_new_tokens=3, generation_temperature=0.5)
    assert zero_losses == off_losses
    for name, value in off_weights.items():
        assert torch.equal(zero_weights[name], value), name
    on_losses, _ = _train(tmp_path, "on", lmbda=1.0, max_new_tokens=3)
    assert on_losses != off_losses  # the comparison can tell the runs apart


def test_the_on_policy_draw_is_seeded_by_the_step_and_covers_lmbda(tmp_path):
    teacher, student = _models()
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path, lmbda=0.5))
    draws = []
    for step in range(200):
        trainer.state.global_step = step
        draws.append(trainer._draws_on_policy(0))
    again = []
    for step in range(200):
        trainer.state.global_step = step
        again.append(trainer._draws_on_policy(0))
    assert draws == again and 70 < sum(draws) < 130


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lmbda": 1.5}, "lmbda must be in"),
        ({"max_new_tokens": 0}, "max_new_tokens must be"),
        ({"generation_temperature": 0.0}, "generation_temperature must be"),
        ({"generation_top_p": 0.0}, "generation_top_p must be"),
    ],
)
def test_on_policy_fields_out_of_range_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        DistillationTrainingArguments(output_dir=str(tmp_path), **overrides)


def test_on_policy_without_a_live_teacher_or_a_causal_lm_is_refused(tmp_path):
    _, student = _models()
    with pytest.raises(ValueError, match="live teacher"):
        DistillationTrainer(model=student, args=make_args(tmp_path, lmbda=0.5, alpha=0.0))
    with pytest.raises(ValueError, match="causal LM student"):
        DistillationTrainer(model=tiny_bert(), teacher_model=tiny_bert(seed=1), args=make_args(tmp_path, lmbda=0.5))


def test_a_two_process_on_policy_run_finishes_cleanly(tmp_path):
    script = Path(__file__).with_name("on_policy_run.py")
    result = subprocess.run(
        [*LAUNCH_TWO, str(script), "--output_dir", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for fatal in ("Traceback", "Segmentation fault", "core dumped"):
        assert fatal not in result.stderr, result.stderr[-3000:]
    records = [json.loads((tmp_path / f"process_{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["world_size"] for record in records] == [2, 2]
    assert records[0]["on_policy_steps"] == records[1]["on_policy_steps"]  # every process drew the same batches
    assert 0 < len(records[0]["on_policy_steps"]) < records[0]["steps"] == 4
