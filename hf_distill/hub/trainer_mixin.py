"""The Trainer methods that save, describe and push the student: timm students in timm's format, the model card, and
Hub failures as one `HubPushError`. Mixed into `DistillationTrainer`; nothing here imports the trainer."""

import os
from typing import Any

import torch
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils.hub import hf_api

from .card_info import create_model_card
from .errors import hub_errors
from .timm_format import is_timm_model, save_timm_model


class HubExportMixin:
    """Overrides of `transformers.Trainer`'s saving and Hub methods; put it before `Trainer` in the bases."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the student (never the teacher): timm students in timm's own Hub format, others as the Trainer does."""
        if not is_timm_model(self.model):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            save_timm_model(self.model, output_dir, state_dict=state_dict)
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        """`Trainer.push_to_hub` (the student and its card, never the teacher), with Hub errors made clear."""
        output_name = os.path.basename(os.path.abspath(self.args.output_dir))
        repo_id = self.hub_model_id or self.args.hub_model_id or output_name
        with hub_errors(repo_id, hf_api().endpoint, self.args.output_dir):
            return super().push_to_hub(*args, **kwargs)

    def create_model_card(self, **kwargs: Any) -> None:
        """Write the student's model card (`README.md`): teacher, data, distillation settings and results."""
        if self.is_world_process_zero():
            create_model_card(self, self.args.output_dir, **kwargs)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """`Trainer.init_hf_repo`, which the constructor calls with `push_to_hub=True`, with Hub errors made clear.

        An unreachable Hub or a refused token raises the same `HubPushError` as a failed `push_to_hub`.
        """
        repo_id = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        with hub_errors(repo_id, hf_api().endpoint, self.args.output_dir):
            super().init_hf_repo(token=token, private=private)
