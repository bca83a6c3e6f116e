"""Teacher and student built for one tokenizer with differently padded vocabularies: compared over the tokenizer's
ids; tokenizers that differ, or widths no tokenizer explains, are refused before training."""

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_distill import DistillationTrainer
from hf_distill.vocabularies import compared_vocab_size
from tests.conftest import lm_dataset, make_args, tiny_gpt2

TOKENS = 30  # the tokenizer's length: every model below pads its vocabulary beyond it


def word_tokenizer(swap: tuple[int, int] | None = None) -> PreTrainedTokenizerFast:
    """A whitespace tokenizer of TOKENS words; `swap` exchanges the words of two ids."""
    words = ["<pad>", "<eos>", *(f"w{i}" for i in range(TOKENS - 2))]
    if swap is not None:
        words[swap[0]], words[swap[1]] = words[swap[1]], words[swap[0]]
    tokenizer = Tokenizer(WordLevel({word: i for i, word in enumerate(words)}, unk_token="<pad>"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _batch():
    dataset = lm_dataset(n=8).map(
        lambda row: {
            "input_ids": [i % TOKENS for i in row["input_ids"]],
            "labels": [i % TOKENS if i != -100 else -100 for i in row["labels"]],
        }
    )
    return {key: torch.as_tensor(value) for key, value in dataset[:8].items()}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_logits_padded_beyond_the_tokenizer_are_compared_over_its_ids(tmp_path, family):
    build = tiny_gpt2 if family == "gpt2" else tiny_llama
    teacher, student = build(vocab_size=48, seed=1), build(vocab_size=40, seed=2)  # padded to 48 and 40 for 30
    temperature, alpha = 2.0, 0.5
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, alpha=alpha, temperature=temperature),
        processing_class=word_tokenizer(),
        teacher_processing_class=word_tokenizer(),
    )
    assert trainer.compared_vocab_size == TOKENS
    batch = _batch()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        inputs = {"input_ids": batch["input_ids"]}
        s, t = student(**inputs).logits[:, :-1, :TOKENS], teacher(**inputs).logits[:, :-1, :TOKENS]
        labels = batch["labels"][:, 1:]
        keep = labels != -100
        s, t, labels = s[keep], t[keep], labels[keep]
        kl = F.kl_div(
            F.log_softmax(s / temperature, -1),
            F.log_softmax(t / temperature, -1),
            log_target=True,
            reduction="batchmean",
        )
        expected = alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, labels)
    torch.testing.assert_close(loss, expected)


def test_training_with_padded_vocabularies_runs(tmp_path):
    dataset = lm_dataset(n=16).map(
        lambda row: {
            "input_ids": [i % TOKENS for i in row["input_ids"]],
            "labels": [i % TOKENS if i != -100 else -100 for i in row["labels"]],
        }
    )
    student = tiny_gpt2(vocab_size=40, seed=2)
    before = student.transformer.h[0].attn.c_attn.weight.detach().clone()
    trainer = DistillationTrainer(
        model=student,
        teacher_model=tiny_gpt2(vocab_size=48, seed=1),
        args=make_args(tmp_path, max_steps=2),
        train_dataset=dataset,
        processing_class=word_tokenizer(),
        teacher_processing_class=word_tokenizer(),
    )
    trainer.train()
    assert not torch.equal(before, student.transformer.h[0].attn.c_attn.weight)


def test_tokenizers_that_differ_on_an_id_are_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"id 5: 'w3' \(student\) vs 'w9' \(teacher\)"):
        DistillationTrainer(
            model=tiny_gpt2(vocab_size=40),
            teacher_model=tiny_gpt2(vocab_size=48),
            args=make_args(tmp_path),
            processing_class=word_tokenizer(),
            teacher_processing_class=word_tokenizer(swap=(5, 11)),
        )


def test_different_widths_without_both_tokenizers_are_refused_naming_both(tmp_path):
    with pytest.raises(ValueError, match="student has 40 logits per position and the teacher 48"):
        DistillationTrainer(
            model=tiny_gpt2(vocab_size=40),
            teacher_model=tiny_gpt2(vocab_size=48),
            args=make_args(tmp_path),
            processing_class=word_tokenizer(),
        )


def test_a_tokenizer_longer_than_a_models_logits_is_refused():
    with pytest.raises(ValueError, match="their tokenizer has 30 tokens"):
        compared_vocab_size(tiny_gpt2(vocab_size=24), tiny_gpt2(vocab_size=48), word_tokenizer(), word_tokenizer())


def test_equal_widths_need_no_tokenizer_and_compare_whole_logits():
    assert compared_vocab_size(tiny_gpt2(), tiny_gpt2(seed=1)) is None
