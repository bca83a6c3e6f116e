"""A synthetic language-modelling task with checkable answers (multi-digit addition) and its tokenizer.

Rows are prompt / completion text with one token per symbol, separated by spaces: `"3 0 7 + 5 8 ="` → `"5 6 3"`,
the sum written least-significant digit first (307 + 58 = 365), which small transformers learn far faster than the
usual order (Lee et al., "Teaching Arithmetic to Small Transformers", ICLR 2024).
"""

import random

from datasets import Dataset
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

SYMBOLS = [*"0123456789", "+", "="]
PAD, EOS = "<pad>", "<eos>"


def arithmetic_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the task's symbols: ids 0 (`<pad>`), 1 (`<eos>`), then the digits, `+` and `=`."""
    vocabulary = {token: index for index, token in enumerate([PAD, EOS, *SYMBOLS])}
    tokenizer = Tokenizer(WordLevel(vocabulary, unk_token=PAD))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS)


def addition_row(a: int, b: int) -> dict[str, str]:
    """`{"prompt": "a + b =", "completion": "reversed digits of a + b"}`, one symbol per token."""
    return {"prompt": " ".join([*str(a), "+", *str(b), "="]), "completion": " ".join(reversed(str(a + b)))}


def addition_splits(digits: int, train_size: int, test_size: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Disjoint train and test sets of additions of numbers with up to `digits` digits, drawn without repetition."""
    limit = 10**digits
    if train_size + test_size > limit * limit:
        raise ValueError(f"Only {limit * limit} additions of {digits}-digit numbers exist; asked for more.")
    generator = random.Random(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < train_size + test_size:
        pairs.add((generator.randrange(limit), generator.randrange(limit)))
    ordered = sorted(pairs)
    generator.shuffle(ordered)
    rows = [addition_row(a, b) for a, b in ordered]
    return Dataset.from_list(rows[:train_size]), Dataset.from_list(rows[train_size:])
