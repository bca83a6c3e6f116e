"""What `DistillationTrainer` adds to `transformers.Trainer` for terms on intermediate outputs: forward hooks while the
models run, a first batch that builds the terms' projections, and those projections in the optimizer, their gradients
and the checkpoints."""

import contextlib
import itertools
import os
from typing import Any

import torch
from torch import Tensor, nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .hooks import FeatureCapture
from .modeling import CACHED_TEACHER_LOGITS_KEY, forward_model
from .projectors import add_to_optimizer, average_gradients, build_projectors, load_projectors, save_projectors


class FeatureTermsMixin:
    """The feature-term part of [`DistillationTrainer`], placed before `transformers.Trainer` in its bases.

    Hooks: on only while the trainer runs the models, for the whole of `train()` and of each evaluation loop (so that
    a `torch.compile`d model sees the same hooks throughout), and around a `compute_loss` called on its own. Outside
    these the models carry no hook of the trainer: nothing is left behind when training ends or fails.

    Projections (see :mod:`hf_distill.projectors`): built by the terms' `setup` from a first batch, at construction
    when a dataset is given, else before the optimizer is created; trained in a parameter group of their own; saved
    in each checkpoint and loaded on resume; never part of the saved student.

    Expects `loss_terms`, `teacher_model` and `get_teacher_outputs` of the trainer; `_init_feature_terms()` is called
    at the end of its `__init__`.
    """

    feature_capture: FeatureCapture | None = None
    projectors: nn.ModuleDict | None = None
    _features_set_up = True
    _projector_grads_stale = True

    def _init_feature_terms(self) -> None:
        """Resolve the modules the terms name (a wrong name fails here) and build the projections if data allows."""
        self.feature_capture = FeatureCapture.for_terms(self.model, self.teacher_model, self.loss_terms)
        if self.feature_capture is None:
            return
        if self.args.n_gpu > 1:
            raise ValueError("Feature terms need one model replica per process: launch with accelerate or torchrun.")
        self._features_set_up = False
        self._set_up_feature_terms()

    def _feature_hooks(self) -> contextlib.AbstractContextManager:
        """The feature terms' forward hooks, on for a block; nothing without feature terms."""
        return self.feature_capture.hooked() if self.feature_capture is not None else contextlib.nullcontext()

    def _recorded_features(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """`(student_features, teacher_features)` of the last forward passes."""
        return self.feature_capture.features() if self.feature_capture is not None else ({}, {})

    def _clear_features(self) -> None:
        """Drop the recorded features, which would hold the autograd graph until the next forward pass."""
        if self.feature_capture is not None:
            self.feature_capture.clear()

    def _first_examples(self, count: int = 2) -> dict[str, Any] | None:
        """The first examples of the training (else evaluation) set, collated and on the device; `None` if none."""
        dataset = self.train_dataset if self.train_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            dataset = next(iter(dataset.values()), None)
        if dataset is None:
            return None
        if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            examples = [dataset[i] for i in range(min(count, len(dataset)))]
        else:
            examples = list(itertools.islice(dataset, count))
        collator = self._get_collator_with_removed_columns(self.data_collator, "feature probe")
        return self._prepare_inputs(collator(examples)) if examples else None

    def _set_up_feature_terms(self, inputs: dict[str, Any] | None = None) -> None:
        """Run student and teacher once on a first batch (`inputs`, else the first examples of the training or
        evaluation set), so that the feature terms check the shapes they compare and build their projections, before
        the optimizer exists. Done once; waits while there is no data."""
        if self._features_set_up:
            return
        inputs = inputs if inputs is not None else self._first_examples()
        if inputs is None:
            return
        inputs = {key: value for key, value in inputs.items() if key not in ("labels", CACHED_TEACHER_LOGITS_KEY)}
        student_inputs = {key: value for key, value in inputs.items() if key != self.args.teacher_column}
        with self.compute_loss_context_manager():
            features = self.feature_capture.record_once(
                self.model, lambda: (forward_model(self.model, student_inputs), self.get_teacher_outputs(inputs, None))
            )
        self.projectors = build_projectors(self.loss_terms, *features, self.accelerator)
        self._features_set_up = True

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """`Trainer.create_optimizer`, plus the projections as a parameter group of their own (the run's learning
        rate, schedule and weight decay), also in an optimizer given to the constructor: the Trainer's groups come
        from `self.model`, which stays the plain student."""
        self._set_up_feature_terms()
        if not self._features_set_up:
            raise ValueError("Feature terms need a first batch to build their projections: give a train_dataset.")
        optimizer = super().create_optimizer(model)
        if self.projectors is not None:
            add_to_optimizer(self.projectors, optimizer, self.args.weight_decay)
        return optimizer

    def training_step(
        self, model: nn.Module, inputs: dict[str, Tensor | Any], num_items_in_batch: Tensor | int | None = None
    ) -> Tensor:
        """`Trainer.training_step`, plus the projections' gradients, which the Trainer does not see: zeroed before
        the first micro-batch of each optimizer step, averaged over processes (as DDP does for the student's) after
        the last. They are left out of the student's gradient clipping."""
        if self.projectors is not None and self._projector_grads_stale:
            self.projectors.zero_grad(set_to_none=True)
            self._projector_grads_stale = False
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.projectors is not None and self.accelerator.sync_gradients:
            average_gradients(self.projectors, self.accelerator)
            self._projector_grads_stale = True
        return loss

    def train(self, *args: Any, **kwargs: Any) -> Any:
        with self._feature_hooks():
            return super().train(*args, **kwargs)

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        with self._feature_hooks():
            return super().evaluation_loop(*args, **kwargs)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """`Trainer._save_checkpoint`, with the projections in `projectors.safetensors`, written before the Trainer's
        files so that a checkpoint whose `trainer_state.json` exists (complete) holds them."""
        if self.projectors is not None and self.args.should_save:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            save_projectors(self.projectors, os.path.join(self._get_output_dir(trial=trial), folder))
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """`Trainer._load_from_checkpoint`, plus the projections saved beside the student."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._set_up_feature_terms()
        if self.projectors is not None:
            load_projectors(self.projectors, resume_from_checkpoint)
