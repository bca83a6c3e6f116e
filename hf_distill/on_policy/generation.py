"""From a training batch to generated completions and back: prompts, left padding for `generate`, and the new batch
whose labels cover the generated tokens only."""

import torch
from torch import Tensor

IGNORE_INDEX = -100


def split_prompts(input_ids: Tensor, attention_mask: Tensor | None, labels: Tensor) -> list[Tensor]:
    """Each row's prompt: its attended tokens before its first labelled position (`labels != -100`).

    A causal LM never scores the label of a row's first token (nothing predicts it), so a row labelled from its
    first token (plain language-modelling data) gets that token as its prompt; a row with no labelled position keeps
    all its attended tokens.

    Args:
        input_ids: `(B, L)`, padded on either side.
        attention_mask: `(B, L)`, 0 on padding, or `None` for no padding.
        labels: `(B, L)`, unshifted (the label of position i is the token at i), -100 where ignored.

    Returns:
        `B` one-dimensional tensors of token ids, without padding.
    """
    attended = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    prompts = []
    for ids, keep, row_labels in zip(input_ids, attended, labels, strict=True):
        labelled = ((row_labels != IGNORE_INDEX) & keep).nonzero()
        end = int(labelled[0]) if len(labelled) else len(ids)
        prompt = ids[:end][keep[:end]]
        prompts.append(prompt if len(prompt) else ids[keep][:1])
    return prompts


def left_pad(sequences: list[Tensor], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """`(input_ids, attention_mask)`, both `(B, max length)`, with each sequence padded on the left, as decoder-only
    models generate from."""
    width = max(len(sequence) for sequence in sequences)
    device = sequences[0].device
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        if len(sequence):
            input_ids[row, -len(sequence) :] = sequence
            attention_mask[row, -len(sequence) :] = 1
    return input_ids, attention_mask


def completion_batch(
    prompts: list[Tensor], completions: Tensor, eos_token_ids: list[int], pad_token_id: int
) -> dict[str, Tensor]:
    """The training batch of prompts followed by their generated completions, right-padded.

    A completion ends at its first end-of-sequence token, which is kept and labelled (the model learns to stop);
    what `generate` wrote after it (padding) is dropped. Labels are -100 on the prompt and the padding, so that only
    generated tokens are scored; positions count from 0 at each row's first token, as in the off-policy batches.

    Args:
        prompts: `B` prompts without padding, as from :func:`split_prompts`.
        completions: `(B, N)` generated tokens (the output of `generate` after the prompt columns).
        eos_token_ids: the ids that end a completion (may be empty).
        pad_token_id: the id written on padding (masked out, never scored).

    Returns:
        `input_ids`, `attention_mask` and `labels`, each `(B, L)`.
    """
    rows = []
    for prompt, completion in zip(prompts, completions, strict=True):
        ends = torch.isin(completion, torch.tensor(eos_token_ids, device=completion.device)).nonzero()
        completion = completion[: int(ends[0]) + 1] if len(ends) else completion
        rows.append((prompt, completion))
    width = max(len(prompt) + len(completion) for prompt, completion in rows)
    device = completions.device
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, (prompt, completion) in enumerate(rows):
        length = len(prompt) + len(completion)
        input_ids[row, :length] = torch.cat([prompt, completion])
        attention_mask[row, :length] = 1
        labels[row, len(prompt) : length] = completion
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
