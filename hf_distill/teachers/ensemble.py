"""Several teachers: a weighted mixture of their tempered probabilities, or one teacher per example by a column."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn

from ..modeling import teacher_forward
from .live import check_no_shared_parameters, load_teacher, prepare_teacher


def mixture_logits(logits: Sequence[Tensor], weights: Sequence[float], temperature: float) -> Tensor:
    r"""Logits whose tempered softmax is the weighted mean of the teachers' tempered probabilities.

    .. math:: m = \sum_k w_k \, \mathrm{softmax}(z_k / T), \quad z = T \log m, \quad \mathrm{softmax}(z / T) = m

    since m sums to 1 (the weights are normalised). The mixture is computed in log space (`logsumexp`), so classes
    that every teacher gives probability 0 (`-inf` logits, a masked vocabulary) stay `-inf`. The returned logits are
    exact for any loss that applies a softmax at the same T (Hinton's KD and its divergences, DKD, DIST); at another
    temperature, or for losses on raw logits (`mse`, logit standardization), they are not the mixture.

    Args:
        logits: K tensors `(..., C)` of the same shape.
        weights: K non-negative weights with a positive sum.
        temperature: T > 0.

    Returns:
        `(..., C)` logits in float32.
    """
    shapes = {tuple(z.shape) for z in logits}
    if len(shapes) != 1:
        raise ValueError(f"The teachers' logits differ in shape: {sorted(shapes)}; they must share the label space.")
    total = float(sum(weights))
    log_weights = torch.tensor([math.log(w / total) if w > 0 else -math.inf for w in weights])
    log_probs = torch.stack([F.log_softmax(z.float() / temperature, dim=-1) for z in logits])  # (K, ..., C)
    log_weights = log_weights.to(log_probs.device).view(-1, *([1] * (log_probs.dim() - 1)))
    return temperature * torch.logsumexp(log_probs + log_weights, dim=0)


def teacher_members(teachers: Sequence[Any] | Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """The `(key, teacher)` pairs of a list (keys 0, 1, ...) or dict of teachers, each an `nn.Module` or a Hub id or
    local path.

    Raises:
        TypeError: naming a member of another type and where it is.
    """
    members = list(teachers.items()) if isinstance(teachers, Mapping) else list(enumerate(teachers))
    for key, member in members:
        if not isinstance(member, (nn.Module, str)):
            raise TypeError(
                "teacher_model must be an nn.Module, a Hub id or a local path, or a list or dict of them; got a "
                f"{type(teachers).__name__} holding a {type(member).__name__} at {key!r}."
            )
    return members


def prepare_teachers(
    teacher_model: nn.Module | str | Sequence[Any] | Mapping[Any, Any] | None,
    student: nn.Module,
    accelerator: Accelerator,
    args: Any,
) -> nn.Module | None:
    """The run's teacher: each teacher given by Hub id or path loaded (`args.teacher_model_init_kwargs`), checked to
    be neither the student nor to share a parameter with it, then frozen and placed (see `prepare_teacher`, with
    `args.teacher_dtype`); a list or dict of them becomes a [`TeacherEnsemble`] with `args.teacher_weights`,
    `args.temperature` and `args.teacher_column`.
    """

    def prepare(teacher: nn.Module | str) -> nn.Module:
        if isinstance(teacher, str):
            teacher = load_teacher(teacher, student, args.teacher_model_init_kwargs)
        if teacher is student:
            raise ValueError("teacher_model is the student itself; pass a separate (copied) teacher.")
        check_no_shared_parameters(teacher, student)
        return prepare_teacher(teacher, accelerator, args.teacher_dtype, args.teacher_channels_last)

    if teacher_model is None:
        return None
    if not isinstance(teacher_model, (list, tuple, Mapping)):
        return prepare(teacher_model)
    prepared = {key: prepare(teacher) for key, teacher in teacher_members(teacher_model)}
    return TeacherEnsemble(prepared, args.teacher_weights, args.temperature, args.teacher_column)


class TeacherEnsemble(nn.Module):
    """Frozen teachers that give one set of teacher logits per batch, as a single teacher does.

    Without `route_column`, every teacher runs on the whole batch and the logits are :func:`mixture_logits` of
    theirs with `weights` at `temperature`: the soft target `softmax(z / T)` is the weighted mean of the teachers'
    tempered probabilities (not of their logits). One teacher gives its own logits unchanged.

    With `route_column`, the batch's column of that name (one teacher index per example, see
    :class:`TeacherRoutingCollator`) sends each example to one teacher: each teacher runs on its examples only and
    the logits are its own, unmixed.

    Teachers are in `self.teachers`, an `nn.ModuleDict` keyed by `str(key)` (`"0"`, `"1"`, ... for a list), so the
    path of a teacher's module is `teachers.<key>.<path>`.

    Args:
        teachers: the prepared (frozen, placed) teachers, a list or a dict from name to teacher.
        weights: one per teacher (list order, or dict keys), normalised to sum to 1; equal by default.
        temperature: T of the soft term that reads the mixture.
        route_column: the batch key holding each example's teacher index, or `None` to mix.
    """

    def __init__(
        self,
        teachers: Sequence[nn.Module] | Mapping[Any, nn.Module],
        weights: Sequence[float] | Mapping[Any, float] | None = None,
        temperature: float = 1.0,
        route_column: str | None = None,
    ) -> None:
        super().__init__()
        members = dict(teachers) if isinstance(teachers, Mapping) else dict(enumerate(teachers))
        if not members:
            raise ValueError("teacher_model is an empty list or dict: give at least one teacher.")
        self.keys = list(members)
        if len({str(key) for key in self.keys}) != len(self.keys):
            raise ValueError(f"Teacher names {self.keys} collide once written as strings.")
        self.teachers = nn.ModuleDict({str(key): teacher for key, teacher in members.items()})
        self.weights = self._weights_in_order(weights)
        self.temperature = temperature
        self.route_column = route_column
        self.requires_grad_(False)
        self.eval()

    def _weights_in_order(self, weights: Sequence[float] | Mapping[Any, float] | None) -> list[float]:
        if weights is None:
            return [1.0] * len(self.keys)
        if isinstance(weights, Mapping):
            by_name = {str(key): float(value) for key, value in weights.items()}
            if set(by_name) != {str(key) for key in self.keys}:
                names = [str(key) for key in self.keys]
                raise ValueError(f"teacher_weights names {sorted(by_name)} must be exactly the teachers' {names}.")
            return [by_name[str(key)] for key in self.keys]
        if len(weights) != len(self.keys):
            raise ValueError(f"teacher_weights has {len(weights)} values for {len(self.keys)} teachers.")
        return [float(value) for value in weights]

    @torch.no_grad()
    def forward(self, inputs: dict[str, Any], output_hidden_states: bool = False) -> tuple[Tensor, Any]:
        """`(logits, raw_outputs)` for a batch: raw outputs are the single teacher's own, else a dict by key (`None`
        when routed)."""
        inputs = dict(inputs)
        routes = inputs.pop(self.route_column, None) if self.route_column is not None else None
        if self.route_column is not None:
            if routes is None:
                raise ValueError(f"The batch has no {self.route_column!r} column to route examples to teachers.")
            return self._routed(inputs, routes, output_hidden_states), None
        outputs = {
            key: teacher_forward(teacher, inputs, output_hidden_states) for key, teacher in self.teachers.items()
        }
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        logits = mixture_logits([logits for logits, _ in outputs.values()], self.weights, self.temperature)
        return logits, {key: raw for key, (_, raw) in outputs.items()}

    def _routed(self, inputs: dict[str, Any], routes: Tensor, output_hidden_states: bool) -> Tensor:
        routes = torch.as_tensor(routes).reshape(-1)
        batch_size = routes.shape[0]
        unknown = sorted(set(routes.tolist()) - set(range(len(self.keys))))
        if unknown:
            raise ValueError(f"Examples are routed to teacher indices {unknown}, but the teachers are {self.keys}.")
        logits = None
        for index, teacher in enumerate(self.teachers.values()):
            rows = (routes == index).nonzero().squeeze(1).to(routes.device)
            if rows.numel() == 0:
                continue
            subset = {
                key: value.index_select(0, rows.to(value.device))
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch_size
                else value
                for key, value in inputs.items()
            }
            teacher_logits, _ = teacher_forward(teacher, subset, output_hidden_states)
            if logits is None:
                logits = teacher_logits.new_zeros((batch_size, *teacher_logits.shape[1:]))
            elif teacher_logits.shape[1:] != logits.shape[1:]:
                raise ValueError(
                    f"The teachers' logits differ in shape: {tuple(logits.shape[1:])} and "
                    f"{tuple(teacher_logits.shape[1:])} per example; they must share the label space."
                )
            logits[rows.to(logits.device)] = teacher_logits.to(logits.dtype)
        return logits


def routing_collator(collator: Any, teacher: nn.Module | None) -> Any:
    """`collator` wrapped in a [`TeacherRoutingCollator`] when `teacher` routes examples by a column, else itself."""
    if isinstance(teacher, TeacherEnsemble) and teacher.route_column is not None:
        return TeacherRoutingCollator(collator, teacher.route_column, teacher.keys)
    return collator


class TeacherRoutingCollator:
    """Wraps a data collator: takes the routing column out of each example, maps its values (list indices, or dict
    keys such as strings, which collators would drop) to teacher indices, and adds them to the batch as a `(B,)`
    integer tensor under the same name.

    Args:
        collator: the collator of the other columns.
        column: the routing column.
        keys: the teachers' keys in order (`[0, 1, ...]` for a list); a value may also be a key's string form.
    """

    def __init__(self, collator: Any, column: str, keys: Sequence[Any]) -> None:
        self.collator = collator
        self.column = column
        self.keys = list(keys)
        self._index = {**{str(key): i for i, key in enumerate(self.keys)}, **{key: i for i, key in enumerate(keys)}}

    def _teacher_index(self, value: Any) -> int:
        value = value.item() if hasattr(value, "item") else value
        index = self._index.get(value, self._index.get(str(value)))
        if index is None:
            raise ValueError(
                f"An example's {self.column!r} is {value!r}, which names none of the teachers {self.keys} (list "
                "indices or dict keys)."
            )
        return index

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        routes, rest = [], []
        for example in features:
            if self.column not in example:
                raise ValueError(
                    f"An example has no {self.column!r} column (teacher_column) to route it to a teacher; it has "
                    f"{sorted(example)}."
                )
            example = dict(example)
            routes.append(self._teacher_index(example.pop(self.column)))
            rest.append(example)
        batch = self.collator(rest)
        batch[self.column] = torch.tensor(routes, dtype=torch.long)
        return batch


def check_teacher_settings(teacher: nn.Module | None, args: Any, terms: Sequence[Any]) -> None:
    """Refuse, before any step, settings that the teacher(s) cannot honour: `teacher_weights` or `teacher_column`
    without several teachers, and, for mixed teachers, losses that read raw logits or hidden states; for routed
    teachers, features recorded from a teacher (it sees only some of the batch)."""
    if not isinstance(teacher, TeacherEnsemble):
        if args.teacher_weights is not None or args.teacher_column is not None:
            raise ValueError(
                "teacher_weights and teacher_column apply to several teachers: pass teacher_model as a list or a dict."
            )
        return
    if len(teacher.keys) > 1 and teacher.route_column is None:
        reason = None
        if args.distillation_method == "kd" and args.distillation_loss == "mse":
            reason = "distillation_loss='mse' compares raw logits"
        elif args.logit_standardization:
            reason = "logit_standardization rescales raw logits"
        elif any(getattr(term, "needs_hidden_states", False) for term in terms):
            reason = "a loss term compares hidden states, which a mixture does not have"
        if reason is not None:
            raise ValueError(
                f"{reason}, but several teachers give a mixture of tempered probabilities (see mixture_logits); route "
                "examples with teacher_column, or use one teacher."
            )
    if teacher.route_column is not None and any(getattr(term, "teacher_modules", ()) for term in terms):
        raise ValueError(
            "Feature terms record teacher modules, but with teacher_column each teacher sees only its examples; mix "
            "the teachers (no teacher_column) to record their features on the whole batch."
        )
