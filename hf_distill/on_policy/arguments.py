"""The on-policy fields of `DistillationTrainingArguments` (GKD, Agarwal et al., 2024), in a dataclass of their own."""

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class OnPolicyArguments(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the on-policy distillation fields of GKD (Agarwal et al., "On-Policy
    Distillation of Language Models: Learning from Self-Generated Mistakes", ICLR 2024), named as in TRL's
    `GKDConfig`. [`DistillationTrainingArguments`] inherits them; they apply to causal LMs only.

    The prompt of a training row is its tokens before its first labelled position (`labels != -100`; at least the
    first token, whose label no causal LM scores), so the same dataset serves off- and on-policy runs.

    Args:
        lmbda (`float`, *optional*, defaults to `0.0`):
            Share of training batches whose completions the student generates from the batch's prompts (GKD's
            lambda), in [0, 1]. 0 is plain off-policy distillation on the dataset's completions, 1 fully on-policy.
            Each micro-batch is drawn on-policy with this probability, from a generator seeded with `seed` and the
            step, so that every process makes the same choice.
        max_new_tokens (`int`, *optional*, defaults to `128`):
            Most tokens generated per completion (student or teacher).
        generation_temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature > 0 of the generated completions (the loss keeps `temperature`).
        generation_top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus-sampling threshold in (0, 1] of the generated completions; 1 samples from the whole distribution.
        seq_kd (`bool`, *optional*, defaults to `False`):
            Sequence-level KD (Kim & Rush, 2016): the teacher generates the completions of every batch that the
            student does not (with `lmbda`, the student's turn comes first, as in TRL's `GKDTrainer`).
    """

    lmbda: float = field(
        default=0.0,
        metadata={"help": "Share in [0, 1] of batches whose completions the student generates (on-policy, GKD)."},
    )
    max_new_tokens: int = field(
        default=128, metadata={"help": "Most tokens generated per completion in on-policy or seq_kd batches."}
    )
    generation_temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature > 0 of generated completions."}
    )
    generation_top_p: float = field(
        default=1.0, metadata={"help": "Nucleus-sampling threshold in (0, 1] of generated completions."}
    )
    seq_kd: bool = field(
        default=False,
        metadata={"help": "Sequence-level KD: the teacher completes the batches that the student does not."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self._validate_on_policy_fields()

    @property
    def generates_completions(self) -> bool:
        """Whether some training batches get generated completions (`lmbda > 0` or `seq_kd`)."""
        return self.lmbda > 0 or bool(self.seq_kd)

    def _validate_on_policy_fields(self) -> None:
        """Raise a `ValueError` naming the field for an on-policy setting out of range."""
        for name in ("lmbda", "generation_temperature", "generation_top_p"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if not 0.0 <= self.lmbda <= 1.0:
            raise ValueError(f"lmbda must be in [0, 1], got {self.lmbda}.")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}.")
        if not self.generation_temperature > 0.0:
            raise ValueError(f"generation_temperature must be > 0, got {self.generation_temperature}.")
        if not 0.0 < self.generation_top_p <= 1.0:
            raise ValueError(f"generation_top_p must be in (0, 1], got {self.generation_top_p}.")
