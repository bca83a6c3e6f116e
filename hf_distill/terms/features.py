"""Terms on intermediate representations of student and teacher."""

from dataclasses import dataclass, field

from ..losses import cosine_hidden_loss
from .base import DistillationBatch, TermLoss


@dataclass
class HiddenStateCosineTerm:
    """DistilBERT's cosine loss between the last hidden states of student and teacher, over attended tokens.

    Both models must return `hidden_states` of the same width; the trainer requests them.
    """

    weight: float
    layer: int = -1
    name: str = "cosine"
    needs_teacher: bool = field(default=True, init=False)
    needs_hidden_states: bool = field(default=True, init=False)

    def __call__(self, batch: DistillationBatch) -> TermLoss:
        student_hidden = batch.student_outputs.hidden_states[self.layer]  # (B, L, H)
        teacher_hidden = batch.teacher_outputs.hidden_states[self.layer]  # (B, L, H)
        attention_mask = batch.inputs.get("attention_mask")
        mask = attention_mask.bool() if attention_mask is not None else None
        return TermLoss(cosine_hidden_loss(student_hidden, teacher_hidden, reduction="none"), mask)
