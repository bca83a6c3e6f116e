"""Token-level distillation of a GPT-2-style causal LM into a shallower student, through the DistillationTrainer."""

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_distill import DistillationTrainer
from hf_distill.students import student_from_teacher
from tests.conftest import VOCAB_SIZE, tiny_gpt2

SEQ_LEN = 12


def _padded_lm_dataset(n: int = 16, seed: int = 0) -> Dataset:
    """Rows of a repeating token pattern, right-padded: attention_mask 0 and labels -100 on the padding."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, VOCAB_SIZE, (n, 1), generator=generator)
    input_ids = (starts + torch.arange(SEQ_LEN)[None, :] % 4) % VOCAB_SIZE  # (N, L): a learnable pattern
    lengths = torch.randint(5, SEQ_LEN + 1, (n,), generator=generator)
    attention_mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return Dataset.from_dict(
        {"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist(), "labels": labels.tolist()}
    )


def _batch(dataset: Dataset, n: int = 8) -> dict[str, torch.Tensor]:
    return {key: torch.as_tensor(value) for key, value in dataset[:n].items()}


def _teacher_and_student():
    teacher = tiny_gpt2(seed=3, layers=4)
    student = student_from_teacher(teacher, layers=[0, 2])
    return teacher, student


def test_student_from_gpt2_teacher_shares_vocabulary_and_head():
    teacher, student = _teacher_and_student()
    assert student.config.n_layer == 2 and student.config.vocab_size == teacher.config.vocab_size
    torch.testing.assert_close(student.lm_head.weight, teacher.lm_head.weight, rtol=0, atol=0)
    assert student.lm_head.weight.data_ptr() == student.transformer.wte.weight.data_ptr()  # still tied


def test_loss_is_token_level_with_the_causal_shift(args_factory):
    teacher, student = _teacher_and_student()
    alpha, temperature = 0.6, 2.0
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args_factory(alpha=alpha, temperature=temperature)
    )
    batch = _batch(_padded_lm_dataset())
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        s = student(**inputs).logits[:, :-1]  # position i predicts token i + 1
        t = teacher(**inputs).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        keep = labels != -100  # (B, L-1): real next tokens only, padding excluded
        s, t, labels = s[keep], t[keep], labels[keep]  # (N, V), (N, V), (N,)
        kl = (
            (
                F.softmax(t / temperature, -1)
                * (F.log_softmax(t / temperature, -1) - F.log_softmax(s / temperature, -1))
            )
            .sum(-1)
            .mean()
        )
        expected = alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, labels)
    torch.testing.assert_close(loss, expected)
    # the hard term is the causal-LM loss transformers computes itself
    with torch.no_grad():
        own = student(**inputs, labels=batch["labels"]).loss
    student_only = DistillationTrainer(model=student, args=args_factory(alpha=0.0))
    with torch.no_grad():
        torch.testing.assert_close(student_only.compute_loss(student, batch), own)


@pytest.mark.parametrize("alpha", [0.6, 1.0])  # the soft-and-hard pair, and the soft loss alone
def test_the_forward_kl_takes_the_teachers_maximum_from_the_trainers_check(args_factory, monkeypatch, alpha):
    from hf_distill.losses import chunked_kl

    taken, original = [], chunked_kl.forward_kl_chunk

    def recording(student, teacher, temperature, buffers, teacher_max=None):
        taken.append((teacher_max, teacher.amax(-1)))
        return original(student, teacher, temperature, buffers, teacher_max)

    monkeypatch.setattr(chunked_kl, "forward_kl_chunk", recording)
    teacher, student = _teacher_and_student()
    args = args_factory(alpha=alpha, loss_chunk_size=4)
    DistillationTrainer(model=student, teacher_model=teacher, args=args).compute_loss(
        student, _batch(_padded_lm_dataset())
    )
    assert taken and all(known is not None and torch.equal(known, computed) for known, computed in taken)


def test_training_the_gpt2_student_lowers_the_loss(args_factory):
    teacher, student = _teacher_and_student()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    dataset = _padded_lm_dataset(n=32)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        train_dataset=dataset,
        eval_dataset=dataset,
        args=args_factory(max_steps=8, learning_rate=5e-3, alpha=0.5, temperature=2.0, eval_strategy="no"),
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert {"soft_loss", "hard_loss"} <= set(trainer.state.log_history[0])
    assert after["eval_loss"] < before["eval_loss"]
    assert 0.0 <= after["eval_teacher_agreement"] <= 1.0
    for key, value in teacher.state_dict().items():  # the teacher is frozen
        torch.testing.assert_close(value, teacher_before[key], rtol=0, atol=0)


def test_different_vocabularies_are_refused_before_training_naming_both(args_factory):
    teacher = tiny_gpt2(vocab_size=VOCAB_SIZE + 8, seed=1, layers=4)
    student = tiny_gpt2(vocab_size=VOCAB_SIZE, seed=2, layers=2)
    # without the two tokenizers nothing says the widths differ only by padding (see tests/test_padded_vocab.py)
    message = rf"student has {VOCAB_SIZE} logits per position and the teacher {VOCAB_SIZE + 8}"
    with pytest.raises(ValueError, match=message):
        DistillationTrainer(model=student, teacher_model=teacher, args=args_factory())
