"""Teacher and student vocabularies that differ only by padding: the width of logits to compare them over, and the
check that their tokenizers agree on it."""

from typing import Any

from torch import nn

from .validation import num_logits

_SHOWN = 5  # differing ids named in an error


def _tokenizer(processing_class: Any) -> Any:
    """The tokenizer of a processing class (a processor holds one as `.tokenizer`)."""
    return getattr(processing_class, "tokenizer", processing_class)


def check_tokenizers_agree(student_tokenizer: Any, teacher_tokenizer: Any) -> None:
    """Raise a `ValueError` unless both tokenizers hold the same tokens under the same ids (added tokens included).

    The message names both vocabulary sizes and the first ids whose tokens differ.
    """
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    student_tokens = {index: token for token, index in student_vocab.items()}
    teacher_tokens = {index: token for token, index in teacher_vocab.items()}
    differing = sorted(
        index
        for index in student_tokens.keys() | teacher_tokens.keys()
        if student_tokens.get(index) != teacher_tokens.get(index)
    )
    if len(student_tokenizer) != len(teacher_tokenizer) or differing:
        shown = ", ".join(
            f"id {index}: {student_tokens.get(index)!r} (student) vs {teacher_tokens.get(index)!r} (teacher)"
            for index in differing[:_SHOWN]
        )
        more = f" and {len(differing) - _SHOWN} more" if len(differing) > _SHOWN else ""
        raise ValueError(
            f"The student's tokenizer ({len(student_tokenizer)} tokens) and the teacher's ({len(teacher_tokenizer)} "
            f"tokens) differ: {shown or 'in length'}{more}. Token-level distillation compares the two models id by "
            "id and needs one tokenizer."
        )


def compared_vocab_size(
    student: nn.Module, teacher: nn.Module | None, student_tokenizer: Any = None, teacher_tokenizer: Any = None
) -> int | None:
    """The number of logits over which student and teacher are compared when their widths differ, else `None`.

    Models built for one tokenizer often pad their embedding matrices beyond it (to a multiple of 64 or 128, e.g.
    152,064 and 151,936 logits for a 151,665-token tokenizer): the logits beyond `len(tokenizer)` belong to no token,
    and both models are compared over the tokenizer's ids, `[0, len(tokenizer))`. That needs both tokenizers (the
    student's as the trainer's `processing_class`, the teacher's as `teacher_processing_class`), which must agree on
    every id (:func:`check_tokenizers_agree`, also run when the widths are equal), and a tokenizer no longer than
    either model's logits.

    Raises:
        ValueError: before training, naming both vocabularies and what differs, for any other mismatch.
    """
    student_tokenizer, teacher_tokenizer = _tokenizer(student_tokenizer), _tokenizer(teacher_tokenizer)
    if student_tokenizer is not None and teacher_tokenizer is not None:
        check_tokenizers_agree(student_tokenizer, teacher_tokenizer)
    student_width, teacher_width = num_logits(student), num_logits(teacher) if teacher is not None else None
    if student_width is None or teacher_width is None or student_width == teacher_width:
        return None
    if student_width != getattr(getattr(student, "config", None), "vocab_size", None):  # classes, not tokens
        raise ValueError(
            f"The student predicts {student_width} classes and the teacher {teacher_width}: distillation needs one "
            "label space (the same num_labels, in the same order)."
        )
    widths = f"The student has {student_width} logits per position and the teacher {teacher_width}"
    if student_tokenizer is None or teacher_tokenizer is None:
        raise ValueError(
            f"{widths}. If both were built for one tokenizer and only pad their vocabularies differently, pass both "
            "tokenizers (processing_class=student_tokenizer, teacher_processing_class=teacher_tokenizer) to compare "
            "them over the tokenizer's ids; otherwise they share no label space."
        )
    size = len(student_tokenizer)
    if size > min(student_width, teacher_width):
        raise ValueError(
            f"{widths}, but their tokenizer has {size} tokens, more than the narrower model has logits: the models "
            "were not built for this tokenizer."
        )
    return size
