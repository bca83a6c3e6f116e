"""`DistillationTrainer`: a `transformers.Trainer` whose loss learns from a frozen teacher."""

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainingArguments

from .cache_training import CachedTeacherMixin
from .checkpoints import CompleteCheckpointResumeMixin
from .config import DistillationTrainingArguments
from .feature_training import FeatureTermsMixin
from .hub.trainer_mixin import HubExportMixin
from .metrics.counts import metrics_from_counts, prediction_counts
from .modeling import (
    PLAIN_MODULE_INPUT_KEYS,
    forward_model,
    is_causal_lm,
    is_transformers_model,
    teacher_forward,
)
from .on_policy import OnPolicyMixin
from .teachers import TeacherEnsemble, check_teacher_settings, prepare_teachers, routing_collator
from .teachers.cache_columns import cached_teacher_collator
from .teachers.cache_record import check_cache_for_training
from .terms import DistillationBatch, HardLabelTerm, LossTerm, TopKTeacherOutputs, soft_term
from .terms.combine import align_batch, check_term_names, weighted_sum
from .terms.topk import topk_support
from .validation import check_dataset, check_single_logit, check_teacher_logits, num_logits
from .vocabularies import compared_vocab_size


class DistillationTrainer(
    FeatureTermsMixin, OnPolicyMixin, CachedTeacherMixin, CompleteCheckpointResumeMixin, HubExportMixin, Trainer
):
    """A drop-in `transformers.Trainer` that distils a frozen `teacher_model` into the trained `model` (the student).

    The loss is a weighted sum of named terms, by default (Hinton et al., 2015)

        loss = alpha * T² * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, labels)

    averaged over the labelled positions (examples, or tokens whose label is not -100, after the causal shift for
    causal LMs). Each term is logged as `<name>_loss` next to `loss`; evaluation adds `accuracy`, `teacher_accuracy`
    and `teacher_agreement` (top-1 of student and teacher agree) when labels exist.

    Called as `transformers.Trainer` is, positionally or by keyword, with the teacher as a keyword:
    `DistillationTrainer(model, args, data_collator, train_dataset, eval_dataset, ..., teacher_model=teacher)`.

    Args:
        model: the student, a transformers model or any `nn.Module` (e.g. timm) called on `batch["pixel_values"]`.
        args: [`DistillationTrainingArguments`], or a plain `TrainingArguments` (converted with the distillation
            defaults, every field kept).
        *trainer_args: the rest of `transformers.Trainer`'s positional arguments (`data_collator`, `train_dataset`,
            `eval_dataset`, ...).
        teacher_model: the teacher, taking the same batch and producing logits of the same shape; or a Hub id / path
            loaded with `args.teacher_model_init_kwargs`; or `None` when the batches carry precomputed
            `teacher_logits` or no term needs a teacher (e.g. `alpha=0`). It is frozen, moved and (with
            `teacher_dtype`) cast in place, as the Trainer does with its model, and never saved. It may share no
            parameter with the student. A list or dict of such teachers makes a [`TeacherEnsemble`]: the soft target
            is the mean of their tempered probabilities weighted by `args.teacher_weights`, or, with
            `args.teacher_column`, each example's own teacher.
        extra_loss_terms: further [`LossTerm`]s added to the teacher and hard ones (e.g. DistilBERT's cosine term, or
            [`FeatureTerm`]s on intermediate outputs, whose hooks and projections are handled by
            [`FeatureTermsMixin`]).
        teacher_processing_class: the teacher's tokenizer, to compare vocabularies padded beyond one tokenizer.
        **kwargs: everything else `transformers.Trainer` takes, by keyword.
    """

    _tag_names = ["hf_distill", "knowledge-distillation"]

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        *trainer_args: Any,
        teacher_model: nn.Module | str | list | dict | None = None,
        extra_loss_terms: list[LossTerm] | None = None,
        teacher_processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = DistillationTrainingArguments(output_dir="trainer_output")
        elif not isinstance(args, TrainingArguments):
            given = repr(args) if isinstance(args, str) else f"a {type(args).__name__}"
            hint = ""
            if isinstance(args, (nn.Module, str)):
                hint = (
                    " The teacher is a keyword argument: DistillationTrainer(model, args, ..., teacher_model=teacher)."
                )
            raise TypeError(f"args must be TrainingArguments or DistillationTrainingArguments, got {given}.{hint}")
        args = DistillationTrainingArguments.from_training_arguments(args)
        if teacher_model is not None and not isinstance(teacher_model, (nn.Module, str, list, tuple, dict)):
            raise TypeError(
                f"teacher_model must be an nn.Module, a Hub id or a local path (or a list or dict of them), got "
                f"{type(teacher_model).__name__}."
            )
        super().__init__(model, args, *trainer_args, **kwargs)
        if self.compute_loss_func is not None:
            raise ValueError(
                "compute_loss_func is not used by DistillationTrainer, whose loss is a sum of terms: pass your loss "
                "as a LossTerm in extra_loss_terms."
            )

        soft_weight, hard_weight = args.loss_weights
        self.loss_terms: list[LossTerm] = [
            soft_term(args),
            HardLabelTerm(hard_weight, args.label_smoothing_factor, args.loss_chunk_size),
            *(extra_loss_terms or []),
        ]
        if all(term.weight == 0 for term in self.loss_terms):
            raise ValueError(
                "Every loss term has weight 0 (soft_weight, hard_weight and extra terms), so nothing would be trained."
            )
        check_term_names(self.loss_terms)
        check_single_logit(num_logits(self.model), soft_weight, args.distillation_loss)
        self.teacher_model = prepare_teachers(teacher_model, self.model, self.accelerator, args)
        check_teacher_settings(self.teacher_model, args, self.loss_terms)
        tokenizers = (self.processing_class, teacher_processing_class)
        self.compared_vocab_size = compared_vocab_size(self.model, self.teacher_model, *tokenizers)
        self.data_collator = cached_teacher_collator(routing_collator(self.data_collator, self.teacher_model))
        self._needs_hidden_states = any(getattr(term, "needs_hidden_states", False) for term in self.loss_terms)
        self.model_accepts_loss_kwargs = True  # compute_loss uses the Trainer's `num_items_in_batch` (no rescaling)
        # The Trainer misses causal LMs whose class name has no loss type (GPT2LMHeadModel); its count of
        # `num_items_in_batch` must use the same shift as the loss.
        self._loss_shifts_labels = self._loss_shifts_labels or is_causal_lm(self.model)
        if not self.label_names:
            self.label_names = ["labels"]
        self._term_losses: dict[str, dict[str, list[Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._eval_counts: Tensor | None = None
        self._num_examples_in_batch: Tensor | None = None
        self._checked_datasets: set[int] = set()
        self._init_feature_terms()  # a wrong module name fails here (see FeatureTermsMixin)
        self._init_on_policy()  # generated completions (lmbda, seq_kd): see OnPolicyMixin

    # ---- Loss ----

    def get_teacher_outputs(self, inputs: dict[str, Any], cached_logits: Any) -> tuple[Tensor | None, Any]:
        """The teacher's `(logits, raw_output)` for a batch; override to change where teacher knowledge comes from.

        Cached logits (a `teacher_logits` column) are used as they are; a top-k cache's `TopKTeacherOutputs` is the raw
        output (the batch's `teacher_topk`: the terms take the cached support). Otherwise the live teacher runs
        without autograd, if any.
        """
        if cached_logits is not None:
            return (None, cached_logits) if isinstance(cached_logits, TopKTeacherOutputs) else (cached_logits, None)
        if self.teacher_model is None:
            return None, None
        if isinstance(self.teacher_model, TeacherEnsemble):
            return self.teacher_model(inputs, self._needs_hidden_states)
        return teacher_forward(self.teacher_model, inputs, self._needs_hidden_states)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        teacher_inputs = dict(inputs)  # with the column routing examples to several teachers, if any
        labels = teacher_inputs.pop("labels", None)
        cached_teacher_logits = self._pop_cached_teacher(teacher_inputs)  # logits, or a top-k batch
        inputs = {key: value for key, value in teacher_inputs.items() if key != self.args.teacher_column}
        self._set_up_feature_terms(teacher_inputs)
        with self._feature_hooks():
            # The teacher first: its activations are freed before the student's are kept for the backward pass.
            teacher_logits, teacher_outputs = self.get_teacher_outputs(teacher_inputs, cached_teacher_logits)
            student_logits, student_outputs = forward_model(model, inputs, self._needs_hidden_states)
            if isinstance(teacher_outputs, TopKTeacherOutputs):
                teacher_outputs.check_classes(student_logits.shape[-1])
            features = self._recorded_features()
        shift, vocab = self._loss_shifts_labels, self.compared_vocab_size
        batch = align_batch(
            inputs, student_logits, teacher_logits, labels, student_outputs, teacher_outputs, shift, vocab
        )
        batch.student_features, batch.teacher_features = features
        batch.step = self.state.global_step + int(model.training)
        if batch.has_teacher:
            check_single_logit(batch.student_logits.shape[-1], self.loss_terms[0].weight, self.args.distillation_loss)
            teacher = topk_support(batch)[0] if batch.teacher_topk is not None else batch.teacher_logits
            maximum = check_teacher_logits(teacher, batch.soft_mask, self.state.global_step)
            batch.teacher_max = maximum if batch.teacher_topk is None else None
        loss = self._weighted_sum(batch, num_items_in_batch, training=model.training)
        self._clear_features()
        if not model.training:
            self._count_eval_predictions(batch)
        return (loss, {"logits": student_logits}) if return_outputs else loss

    def _weighted_sum(
        self, batch: DistillationBatch, num_items_in_batch: Tensor | int | None, training: bool
    ) -> Tensor:
        """Sum the terms (see `weighted_sum`) with the Trainer's counts of the accumulated batch; record each term."""
        denominators, process_scale = None, 1
        if training and num_items_in_batch is not None:
            denominators = {"labels": num_items_in_batch, "examples": self._num_examples_in_batch}
            if self.args.average_tokens_across_devices:
                # DDP averages gradients over processes while the counts cover all of them: undo the average.
                process_scale = self.accelerator.num_processes // self.get_tp_size()
        loss, means = weighted_sum(
            self.active_loss_terms(training),
            batch,
            denominators,
            getattr(self, "current_gradient_accumulation_steps", 1),
            process_scale,
            training,
        )
        recorded = self._term_losses["train" if training else "eval"]
        for name, mean in means.items():
            recorded[name].append(mean)
        return loss

    def _count_eval_predictions(self, batch: DistillationBatch) -> None:
        counts = prediction_counts(batch)
        self._eval_counts = counts if self._eval_counts is None else self._eval_counts + counts

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The Trainer's accumulated batch and its label count, plus the number of its examples (on all processes,
        as the label count), the denominator of the terms that cover every example."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._num_examples_in_batch = None
        if num_items_in_batch is not None:
            examples = torch.tensor(sum(len(batch["labels"]) for batch in batch_samples), device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                examples = self.accelerator.gather(examples).sum()
            self._num_examples_in_batch = examples
        return batch_samples, num_items_in_batch

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
            counts = self.accelerator.reduce(self._eval_counts, reduction="sum")
            metrics.update(metrics_from_counts(counts, metric_key_prefix))
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
        if all(inputs.get(name) is not None for name in self.label_names):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        # Unlabelled batch: the Trainer would report no loss (and cannot call a plain module with **inputs). With
        # teacher outputs the loss is the soft loss, so that `eval_loss` exists for unlabelled evaluation data.
        inputs = self._prepare_inputs(inputs)
        has_teacher = self.teacher_model is not None or self._has_cached_teacher(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            if has_teacher:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                logits, loss = outputs["logits"], loss.detach()
            else:
                logits, loss = forward_model(model, inputs)[0], None
        return loss, (None if prediction_loss_only else logits.detach()), None

    # ---- Data ----

    def _set_signature_columns_if_needed(self) -> None:
        """Keep cached teacher outputs, the column routing examples to teachers, and a plain module's input column."""
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            if self.args.teacher_column is not None:
                self._signature_columns.append(self.args.teacher_column)
            if not is_transformers_model(self.model):
                self._signature_columns.extend(PLAIN_MODULE_INPUT_KEYS)

    def _check_once(self, dataset: Any, split: str) -> None:
        """Check a dataset's labels and token ids against the models (see `check_dataset`) and, for a teacher cache,
        the cache against the dataset and teacher (see `check_cache_for_training`), once per dataset."""
        if dataset is not None and id(dataset) not in self._checked_datasets:
            check_dataset(dataset, self.model, self.teacher_model, split)
            check_cache_for_training(dataset, self.teacher_model, self.args)
            self._checked_datasets.add(id(dataset))

    def get_train_dataloader(self):
        self._check_once(self.train_dataset, "training")
        return super().get_train_dataloader()

    def get_eval_dataloader(self, eval_dataset=None):
        if not isinstance(eval_dataset, str):
            self._check_once(eval_dataset if eval_dataset is not None else self.eval_dataset, "evaluation")
        return super().get_eval_dataloader(eval_dataset)
