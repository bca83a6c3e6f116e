"""A tiny distillation run that the distributed tests launch with `python` or `accelerate launch`.

Writes `final.safetensors` (student weights), `log_history.json` and `process_<rank>.json` into `--output_dir`; with
`--feature_term 1` also `projectors.safetensors`, the trained projection of a FitNets hint to a wider teacher.
"""

import argparse
import json
import os
import sys
import time

import torch
from safetensors.torch import save_file
from transformers import BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_distill import DistillationTrainer, FeatureTerm  # noqa: E402
from tests.conftest import make_args, text_dataset, tiny_bert  # noqa: E402

HIDDEN_LAYER = "bert.encoder.layer.1"


def wide_teacher() -> BertForSequenceClassification:
    """A teacher with hidden size 24 where the student has 16: a hint between them needs a projection."""
    return tiny_bert(seed=2, hidden_size=24)


class RecordSteps(TrainerCallback):
    """Records the optimizer steps this process runs, sleeping after each so that a test can kill the run."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.steps_run: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_run.append(state.global_step)
        time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--per_device_train_batch_size", type=int, default=8)
    parser.add_argument("--max_steps", type=int, default=6)
    parser.add_argument("--save_steps", type=int, default=0)
    parser.add_argument("--resume_from_checkpoint", default=None)
    parser.add_argument("--seconds_per_step", type=float, default=0.0)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--label_smoothing_factor", type=float, default=0.0)
    parser.add_argument("--unlabelled_every", type=int, default=0, help="Label every k-th example -100.")
    parser.add_argument("--plain_trainer", type=int, default=0, help="1: train with transformers.Trainer instead.")
    parser.add_argument("--feature_term", type=int, default=0, help="1: add an L2 hint on a layer's hidden states.")
    cli = parser.parse_args()

    args = make_args(
        cli.output_dir,
        max_steps=cli.max_steps,
        per_device_train_batch_size=cli.per_device_train_batch_size,
        save_strategy="steps" if cli.save_steps else "no",
        save_steps=cli.save_steps or 500,
        learning_rate=5e-3,
        optim="sgd",
        alpha=cli.alpha,
        label_smoothing_factor=cli.label_smoothing_factor,
    )
    dataset = text_dataset(n=64)
    if cli.unlabelled_every:
        dataset = dataset.map(
            lambda row, i: {"labels": -100 if i % cli.unlabelled_every == 0 else row["labels"]}, with_indices=True
        )
    recorder = RecordSteps(cli.seconds_per_step)
    if cli.plain_trainer:
        plain_args = TrainingArguments(
            **{
                key: getattr(args, key)
                for key in (
                    "output_dir",
                    "max_steps",
                    "per_device_train_batch_size",
                    "learning_rate",
                    "optim",
                    "label_smoothing_factor",
                    "report_to",
                    "use_cpu",
                    "seed",
                    "data_seed",
                    "logging_steps",
                    "save_strategy",
                    "disable_tqdm",
                )
            }
        )
        trainer = Trainer(tiny_bert(seed=1), plain_args, train_dataset=dataset, callbacks=[recorder])
        trainer.teacher_model = tiny_bert(seed=2, layers=3)  # recorded below like the distillation run's
    else:
        trainer = DistillationTrainer(
            tiny_bert(seed=1),
            args,
            train_dataset=dataset,
            callbacks=[recorder],
            teacher_model=wide_teacher() if cli.feature_term else tiny_bert(seed=2, layers=3),
            extra_loss_terms=[FeatureTerm(HIDDEN_LAYER, HIDDEN_LAYER, "l2", weight=2.0)] if cli.feature_term else None,
        )
    trainer.train(resume_from_checkpoint=cli.resume_from_checkpoint)

    # Every rank tries to save into its own folder: only the main process may write.
    rank_dir = os.path.join(cli.output_dir, f"save_model_rank{trainer.args.process_index}")
    trainer.save_model(rank_dir)
    record = {
        "process_index": trainer.args.process_index,
        "world_size": trainer.args.world_size,
        "teacher_device": str(next(trainer.teacher_model.parameters()).device),
        "teacher_is_wrapped": type(trainer.teacher_model).__name__ != "BertForSequenceClassification",
        "wrote_save_model": os.path.isdir(rank_dir),
        "steps_run": recorder.steps_run,
    }
    with open(os.path.join(cli.output_dir, f"process_{trainer.args.process_index}.json"), "w") as f:
        json.dump(record, f)
    if trainer.is_world_process_zero():
        state = {key: value.detach().contiguous() for key, value in trainer.model.state_dict().items()}
        save_file(state, os.path.join(cli.output_dir, "final.safetensors"))
        if getattr(trainer, "projectors", None) is not None:
            projectors = {key: value.detach().contiguous() for key, value in trainer.projectors.state_dict().items()}
            save_file(projectors, os.path.join(cli.output_dir, "projectors.safetensors"))
        with open(os.path.join(cli.output_dir, "log_history.json"), "w") as f:
            json.dump(trainer.state.log_history, f)
    trainer.accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
