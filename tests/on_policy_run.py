"""A tiny on-policy run (lmbda=0.5) that `tests/test_on_policy.py` launches on two CPU processes.

Writes `process_<rank>.json`: the world size, the steps run and the steps whose batch the student completed.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_distill import DistillationTrainer  # noqa: E402
from hf_distill.students import student_from_teacher  # noqa: E402
from tests.conftest import make_args, prompt_completion_dataset, tiny_gpt2  # noqa: E402


class RecordingTrainer(DistillationTrainer):
    """Records the optimizer steps whose micro-batch was drawn on-policy."""

    on_policy_steps: list[int]

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._student_generated:
            self.on_policy_steps.append(self.state.global_step + 1)
        return batches, count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    cli = parser.parse_args()
    teacher = tiny_gpt2(seed=3, layers=4)
    student = student_from_teacher(teacher, layers=[0, 2])
    args = make_args(cli.output_dir, max_steps=4, per_device_train_batch_size=4, lmbda=0.5, max_new_tokens=4)
    trainer = RecordingTrainer(student, args, train_dataset=prompt_completion_dataset(n=32), teacher_model=teacher)
    trainer.on_policy_steps = []
    trainer.train()
    record = {
        "world_size": trainer.args.world_size,
        "steps": trainer.state.global_step,
        "on_policy_steps": trainer.on_policy_steps,
    }
    with open(os.path.join(cli.output_dir, f"process_{trainer.args.process_index}.json"), "w") as f:
        json.dump(record, f)
    trainer.accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
