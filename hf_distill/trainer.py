"""`DistillationTrainer`: a `transformers.Trainer` whose loss learns from a frozen teacher."""

import os
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils.hub import hf_api

from .card_info import create_model_card
from .config import DistillationTrainingArguments
from .hub import hub_errors, is_timm_model, save_timm_model
from .losses import IGNORE_INDEX, check_logit_shapes, reduce_loss
from .modeling import (
    CACHED_TEACHER_LOGITS_KEY,
    PLAIN_MODULE_INPUT_KEYS,
    forward_model,
    is_causal_lm,
    is_transformers_model,
    teacher_forward,
)
from .teacher import load_teacher, prepare_teacher
from .terms import DistillationBatch, HardLabelTerm, LossTerm, SoftTargetTerm


class DistillationTrainer(Trainer):
    """A drop-in `transformers.Trainer` that distils a frozen `teacher_model` into the trained `model` (the student).

    The loss is a weighted sum of named terms, by default (Hinton et al., 2015)

        loss = alpha * T² * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, labels)

    averaged over the labelled positions (examples, or tokens whose label is not -100, after the causal shift for
    causal LMs). Each term is logged as `<name>_loss` next to `loss`; evaluation adds `accuracy`, `teacher_accuracy`
    and `teacher_agreement` (top-1 of student and teacher agree) when labels exist.

    Args:
        model: the student, a transformers model or any `nn.Module` (e.g. timm) called on `batch["pixel_values"]`.
        teacher_model: the teacher, taking the same batch and producing logits of the same shape; or a Hub id / path
            loaded with `args.teacher_model_init_kwargs`; or `None` when the batches carry precomputed
            `teacher_logits` or no term needs a teacher (e.g. `alpha=0`). It is frozen and never saved.
        args: [`DistillationTrainingArguments`].
        extra_loss_terms: further [`LossTerm`]s added to the soft and hard ones (e.g. DistilBERT's cosine term).
        **kwargs: everything else `transformers.Trainer` takes.
    """

    _tag_names = ["hf_distill", "knowledge-distillation"]

    def __init__(
        self,
        model: nn.Module | None = None,
        teacher_model: nn.Module | str | None = None,
        args: DistillationTrainingArguments | None = None,
        extra_loss_terms: list[LossTerm] | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = DistillationTrainingArguments(output_dir="trainer_output")
        elif not isinstance(args, DistillationTrainingArguments):
            raise TypeError(f"args must be DistillationTrainingArguments, got {type(args).__name__}.")
        if isinstance(teacher_model, str):
            teacher_model = load_teacher(teacher_model, model, args.teacher_model_init_kwargs)
        if teacher_model is not None and teacher_model is model:
            raise ValueError("teacher_model is the student itself; pass a separate (copied) teacher.")
        super().__init__(model=model, args=args, **kwargs)

        soft_weight, hard_weight = args.loss_weights
        self.loss_terms: list[LossTerm] = [
            SoftTargetTerm(soft_weight, args.temperature, args.distillation_loss, args.jsd_beta),
            HardLabelTerm(hard_weight),
            *(extra_loss_terms or []),
        ]
        self.teacher_model = None
        if teacher_model is not None:
            self.teacher_model = prepare_teacher(teacher_model, self.accelerator, args.teacher_dtype)
        self._needs_hidden_states = any(getattr(term, "needs_hidden_states", False) for term in self.loss_terms)
        # compute_loss normalises by `num_items_in_batch` itself, so the Trainer must count it and not rescale the loss
        # for gradient accumulation a second time.
        self.model_accepts_loss_kwargs = True
        # The Trainer misses causal LMs whose class name has no loss type (GPT2LMHeadModel); its count of
        # `num_items_in_batch` must use the same shift as the loss.
        self._loss_shifts_labels = self._loss_shifts_labels or is_causal_lm(self.model)
        if not self.label_names:
            self.label_names = ["labels"]
        self._term_losses: dict[str, dict[str, list[Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._eval_counts: Tensor | None = None

    # ---- Loss ----

    def get_teacher_outputs(self, inputs: dict[str, Any], cached_logits: Tensor | None) -> tuple[Tensor | None, Any]:
        """The teacher's `(logits, raw_output)` for a batch; override to change where teacher knowledge comes from.

        Logits precomputed into the dataset (a `teacher_logits` column) are used as they are; otherwise the live
        teacher runs without autograd. Without either, returns `(None, None)`.
        """
        if cached_logits is not None:
            return cached_logits, None
        if self.teacher_model is None:
            return None, None
        return teacher_forward(self.teacher_model, inputs, self._needs_hidden_states)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        cached_teacher_logits = inputs.pop(CACHED_TEACHER_LOGITS_KEY, None)
        student_logits, student_outputs = forward_model(model, inputs, self._needs_hidden_states)
        teacher_logits, teacher_outputs = self.get_teacher_outputs(inputs, cached_teacher_logits)
        batch = self._align(inputs, student_logits, teacher_logits, labels, student_outputs, teacher_outputs)
        loss = self._weighted_sum(batch, num_items_in_batch, training=model.training)
        if not model.training:
            self._count_eval_predictions(batch)
        return (loss, {"logits": student_logits}) if return_outputs else loss

    def _align(
        self,
        inputs: dict[str, Any],
        student_logits: Tensor,
        teacher_logits: Tensor | None,
        labels: Tensor | None,
        student_outputs: Any,
        teacher_outputs: Any,
    ) -> DistillationBatch:
        """Check shapes, apply the causal-LM shift and build the position mask."""
        if teacher_logits is not None:
            check_logit_shapes(student_logits, teacher_logits)
        attention_mask = inputs.get("attention_mask") if student_logits.dim() == 3 else None
        if self._loss_shifts_labels:
            # Causal LMs: the logits at position i predict the token at position i + 1.
            student_logits = student_logits[..., :-1, :]
            teacher_logits = teacher_logits[..., :-1, :] if teacher_logits is not None else None
            labels = labels[..., 1:] if labels is not None else None
            attention_mask = attention_mask[..., 1:] if attention_mask is not None else None
        if labels is not None:
            mask = labels != IGNORE_INDEX
        else:
            mask = attention_mask.bool() if attention_mask is not None else None
        return DistillationBatch(
            inputs, student_logits, teacher_logits, labels, mask, student_outputs, teacher_outputs
        )

    def _weighted_sum(
        self, batch: DistillationBatch, num_items_in_batch: Tensor | int | None, training: bool
    ) -> Tensor:
        """Sum the weighted terms, normalised so that gradient accumulation and several processes are exact.

        Terms over labelled positions are divided by `num_items_in_batch` (all labelled positions of the accumulated
        batch on all processes, counted by the Trainer); other terms are averaged per micro-batch. Without
        `num_items_in_batch` every term is a per-batch mean and the Trainer divides by the accumulation steps.
        """
        process_scale = 1
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # DDP averages gradients over processes while num_items_in_batch counts all of them: undo the average.
            process_scale = self.accelerator.num_processes // self.get_tp_size()
        accumulation_steps = getattr(self, "current_gradient_accumulation_steps", 1) if training else 1
        total = torch.zeros((), device=batch.student_logits.device)
        for term in self.loss_terms:
            if not self._can_compute(term, batch):
                continue
            result = term(batch)
            masked_sum = reduce_loss(result.per_position, result.mask, "sum")
            count = result.mask.sum() if result.mask is not None else result.per_position.numel()
            mean = masked_sum / torch.clamp_min(torch.as_tensor(count, device=masked_sum.device), 1)
            self._term_losses["train" if training else "eval"][f"{term.name}_loss"].append(mean.detach())
            if term.weight == 0:
                continue
            if num_items_in_batch is None:
                value = mean
            elif result.counts_labels:
                value = masked_sum / num_items_in_batch
            else:
                value = mean / (accumulation_steps * process_scale)
            total = total + term.weight * value
        return total * process_scale

    @staticmethod
    def _can_compute(term: LossTerm, batch: DistillationBatch) -> bool:
        """Whether the batch has what `term` needs; an error if it has not and the term has a non-zero weight."""
        missing = []
        if getattr(term, "needs_teacher", True) and batch.teacher_logits is None:
            missing.append("teacher outputs (pass teacher_model, or a teacher_logits column)")
        if getattr(term, "needs_labels", False) and batch.labels is None:
            missing.append("`labels` (give labels, or set alpha=1.0)")
        if missing and term.weight != 0:
            raise ValueError(
                f"The {term.name} loss has weight {term.weight}, but there are no {' and no '.join(missing)}."
            )
        return not missing

    def _count_eval_predictions(self, batch: DistillationBatch) -> None:
        """Accumulate correct / agreeing top-1 counts over the labelled positions of an evaluation batch."""
        if batch.labels is None:
            return
        mask = batch.mask
        student_predictions = batch.student_logits.argmax(-1)
        counts = [(student_predictions == batch.labels)[mask].sum(), mask.sum()]
        if batch.teacher_logits is not None:
            teacher_predictions = batch.teacher_logits.argmax(-1)
            counts += [
                (teacher_predictions == batch.labels)[mask].sum(),
                (teacher_predictions == student_predictions)[mask].sum(),
            ]
        counts = torch.stack(counts).double()
        self._eval_counts = counts if self._eval_counts is None else self._eval_counts + counts

    # ---- Logging and evaluation ----

    def _mean_term_losses(self, mode: str) -> dict[str, float]:
        """Mean of each term's values recorded in `mode` ("train" or "eval") over steps and processes; clears them."""
        recorded = self._term_losses[mode]
        means = {
            name: self.accelerator.reduce(torch.stack(values).mean(), reduction="mean").item()
            for name, values in sorted(recorded.items())
        }
        recorded.clear()
        return means

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the terms since the last one
            logs.update(self._mean_term_losses("train"))
        super().log(logs, start_time)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The Trainer's loop, plus the mean of each loss term, accuracy and teacher agreement in the metrics."""
        self._term_losses["eval"].clear()
        self._eval_counts = None
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in self._mean_term_losses("eval").items()}
        if self._eval_counts is not None:
            # Counted per batch: in multi-process runs the few samples duplicated to even out the last batch count too.
            counts = self.accelerator.reduce(self._eval_counts, reduction="sum").tolist()
            total = max(counts[1], 1.0)
            metrics[f"{metric_key_prefix}_accuracy"] = counts[0] / total
            if len(counts) == 4:
                metrics[f"{metric_key_prefix}_teacher_accuracy"] = counts[2] / total
                metrics[f"{metric_key_prefix}_teacher_agreement"] = counts[3] / total
            self._eval_counts = None
        for key, value in metrics.items():
            output.metrics.setdefault(key, value)  # a user's compute_metrics keeps its own values
        return output

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        has_labels = all(inputs.get(name) is not None for name in self.label_names)
        if has_labels or is_transformers_model(model):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        # Unlabelled batch for a plain module (timm): the Trainer would call model(**inputs), which it cannot take.
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            logits, _ = forward_model(model, inputs)
        return None, (None if prediction_loss_only else logits.detach()), None

    # ---- Saving and the Hub ----

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

    # ---- Data ----

    def _set_signature_columns_if_needed(self) -> None:
        """Keep cached teacher logits, and the input column a plain `nn.Module` student is called with."""
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            self._signature_columns.append(CACHED_TEACHER_LOGITS_KEY)
            if not is_transformers_model(self.model):
                self._signature_columns.extend(PLAIN_MODULE_INPUT_KEYS)
