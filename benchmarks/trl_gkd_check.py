"""Our token-level loss against TRL's GKD loss on the same tiny teacher, student and student-generated sequences.

TRL is not a dependency of hf_distill: install it beside it, in a separate environment, to run this check:

    python -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install -e . trl
    /tmp/trlvenv/bin/python benchmarks/trl_gkd_check.py

TRL's `GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels, beta, temperature)` is our soft term
with `alpha=1` (no hard term) and no T² factor: its `beta=0` is our `forward_kl` (KL(teacher || student)), `beta=1`
our `reverse_kl` (KL(student || teacher)), and `0 < beta < 1` our `jsd` with `jsd_beta=beta` (the mixture is
`beta * p_teacher + (1 - beta) * p_student` in both). Ours multiplies by T², so the check runs at T = 1 and also at
T = 2 with TRL's loss scaled by T². Prints, for each setting, the largest difference of the losses and of the
gradients on the student's parameters.
"""

import os
import sys
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from hf_distill import DistillationTrainer, DistillationTrainingArguments  # noqa: E402
from hf_distill.students import student_from_teacher  # noqa: E402

try:
    from trl.experimental.gkd import GKDTrainer  # trl >= 1.0
except ImportError:
    from trl import GKDTrainer  # older trl

VOCAB, EOS = 50, 3
# (TRL beta, our distillation_loss, our jsd_beta)
SETTINGS = [
    (0.0, "forward_kl", 0.5),
    (0.1, "jsd", 0.1),
    (0.5, "jsd", 0.5),
    (0.9, "jsd", 0.9),
    (1.0, "reverse_kl", 0.5),
]


def tiny_models() -> tuple[GPT2LMHeadModel, GPT2LMHeadModel]:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=4,
        n_head=2,
        eos_token_id=EOS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    teacher = GPT2LMHeadModel(config)
    student = student_from_teacher(teacher, layers=[0, 3])
    with torch.no_grad():  # a student that differs from the teacher in more than its depth
        for parameter in student.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return teacher, student


def prompt_batch(n: int = 6) -> dict[str, torch.Tensor]:
    """Right-padded prompts (labels -100) with a one-token labelled completion, from which the student generates."""
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 6, (n,), generator=generator)
    width = int(lengths.max()) + 1
    input_ids = torch.randint(4, VOCAB, (n, width), generator=generator)
    attention_mask = (torch.arange(width)[None] <= lengths[:, None]).long()
    labels = torch.full_like(input_ids, -100)
    labels[torch.arange(n), lengths] = input_ids[torch.arange(n), lengths]
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask, "labels": labels}


def gradients(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def main() -> None:
    teacher, student = tiny_models()
    output_dir = tempfile.mkdtemp()
    args = DistillationTrainingArguments(
        output_dir=output_dir, use_cpu=True, report_to=[], lmbda=1.0, max_new_tokens=12, alpha=1.0, seed=0
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    [batch], _ = trainer.get_batch_samples(iter([prompt_batch()]), 1, torch.device("cpu"))  # student-generated
    generated = int((batch["labels"] != -100).sum())
    print(f"{len(batch['labels'])} sequences, {generated} student-generated tokens scored, trl {trl_version()}")
    print(
        f"{'TRL beta':>8} {'ours':>18} {'T':>3} {'loss ours':>12} {'loss TRL':>12} {'max |diff| loss':>16} "
        f"{'max |diff| grad':>16}"
    )
    worst = 0.0
    for temperature in (1.0, 2.0):
        for beta, divergence, jsd_beta in SETTINGS:
            trainer.args.temperature, trainer.args.distillation_loss = temperature, divergence
            trainer.loss_terms[0].temperature, trainer.loss_terms[0].divergence = temperature, divergence
            trainer.loss_terms[0].jsd_beta = jsd_beta
            trainer._hard_term_off = True  # as on a student-generated batch in training
            student.zero_grad()
            ours = trainer.compute_loss(student, batch)
            ours.backward()
            grad_ours = gradients(student)
            student.zero_grad()
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            with torch.no_grad():
                teacher_logits = teacher(**inputs).logits[:, :-1]
            theirs = temperature**2 * GKDTrainer.generalized_jsd_loss(
                student(**inputs).logits[:, :-1], teacher_logits, batch["labels"][:, 1:], beta, temperature
            )
            theirs.backward()
            loss_diff = abs(ours.item() - theirs.item())
            grad_diff = (grad_ours - gradients(student)).abs().max().item()
            worst = max(worst, loss_diff, grad_diff)
            name = divergence if divergence != "jsd" else f"jsd({jsd_beta})"
            print(
                f"{beta:>8} {name:>18} {temperature:>3.0f} {ours.item():>12.6f} {theirs.item():>12.6f} "
                f"{loss_diff:>16.2e} {grad_diff:>16.2e}"
            )
    print(f"largest difference over all settings: {worst:.2e}")


def trl_version() -> str:
    import trl

    return trl.__version__


if __name__ == "__main__":
    main()
