"""Training arguments for knowledge distillation."""

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments

from .losses import DIVERGENCES
from .on_policy.arguments import OnPolicyArguments

TEACHER_DTYPES = ("float32", "bfloat16", "float16")
DISTILLATION_METHODS = ("kd", "dkd", "dist")
TOPK_TAILS = ("bucket", "renormalize")
# Non-negative weights of the DKD and DIST terms.
_METHOD_WEIGHTS = ("dkd_alpha", "dkd_beta", "dist_beta", "dist_gamma")


def _parse_teacher_weights(weights: Any) -> list[float] | dict[str, float] | None:
    """`teacher_weights` as a list or dict of finite non-negative numbers with a positive sum (JSON text parsed)."""
    if weights is None:
        return None
    if isinstance(weights, str):
        try:
            weights = json.loads(weights)
        except ValueError:
            weights = None
    if isinstance(weights, tuple):
        weights = list(weights)
    values = weights.values() if isinstance(weights, dict) else weights if isinstance(weights, list) else None
    if (
        not values
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        or min(values) < 0
        or sum(values) <= 0
    ):
        raise ValueError(
            "teacher_weights must be a list of non-negative numbers (one per teacher) or a dict from teacher name to "
            f"such a number, with a positive sum; on the command line JSON such as '[0.7, 0.3]'. Got {weights!r}."
        )
    return weights


@dataclass
class DistillationTrainingArguments(OnPolicyArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the knobs of knowledge distillation (Hinton et al., 2015).

    The training loss of [`DistillationTrainer`] is

        loss = soft_weight * T² * D(p_teacher^T, p_student^T) + hard_weight * CE(student, labels)

    with `soft_weight = alpha`, `hard_weight = 1 - alpha` unless both weights are given explicitly.

    Args:
        alpha (`float`, *optional*, defaults to `0.5`):
            Weight of the soft (teacher) loss, in [0, 1]; the hard cross-entropy on labels gets `1 - alpha`. `alpha=0`
            is plain supervised training, `alpha=1` needs no labels at all.
        temperature (`float`, *optional*, defaults to `2.0`):
            Softmax temperature T > 0 applied to teacher and student logits in the soft loss, which is scaled by T².
        distillation_loss (`str`, *optional*, defaults to `"forward_kl"`):
            Divergence between the tempered distributions: `forward_kl` (KL(teacher || student), Hinton),
            `reverse_kl` (KL(student || teacher)), `jsd` (generalized Jensen-Shannon, see `jsd_beta`) or `mse` (mean
            squared error between tempered logits).
        jsd_beta (`float`, *optional*, defaults to `0.5`):
            Interpolation weight beta in (0, 1) of the generalized Jensen-Shannon divergence (GKD, Agarwal et al.,
            2024): the mixture is `beta * p_teacher + (1 - beta) * p_student`. Only used with
            `distillation_loss="jsd"`.
        soft_weight (`float`, *optional*):
            Explicit weight of the soft loss, overriding `alpha` (DistilBERT's triple loss uses 5.0). Must be >= 0 and
            given together with `hard_weight`.
        hard_weight (`float`, *optional*):
            Explicit weight of the hard (label) loss, overriding `1 - alpha` (DistilBERT uses 2.0). Must be >= 0 and
            given together with `soft_weight`.
        teacher_dtype (`str`, *optional*):
            Run the teacher in this precision (`float32`, `bfloat16` or `float16`) to save memory and time; by
            default it keeps the dtype it was loaded with.
        teacher_model_init_kwargs (`dict` or `str`, *optional*):
            Keyword arguments for `from_pretrained` when `teacher_model` is given as a Hub id or path; on the command
            line a JSON object (`'{"torch_dtype": "bfloat16"}'`), as for the dict fields of `TrainingArguments`.
        distillation_method (`str`, *optional*, defaults to `"kd"`):
            The teacher term: `kd` (Hinton's soft targets with `distillation_loss`), `dkd` (decoupled KD, Zhao et al.,
            2022, see `dkd_alpha`, `dkd_beta`, `dkd_warmup_steps`) or `dist` (DIST, Huang et al., 2022, see
            `dist_beta`, `dist_gamma`). Each uses `temperature` and the soft weight; the hard term stays.
        dkd_alpha (`float`, *optional*, defaults to `1.0`):
            DKD's weight of the target-class term (TCKD), >= 0.
        dkd_beta (`float`, *optional*, defaults to `8.0`):
            DKD's weight of the non-target-class term (NCKD), >= 0: 8.0 on CIFAR-100, 0.5 on ImageNet in the paper.
        dkd_warmup_steps (`int`, *optional*, defaults to `0`):
            Optimizer steps over which the DKD loss ramps up as `min(step / dkd_warmup_steps, 1)` (mdistiller warms
            up over 20 epochs); 0 turns the warm-up off.
        dist_beta (`float`, *optional*, defaults to `1.0`):
            DIST's weight of the inter-class relation, >= 0.
        dist_gamma (`float`, *optional*, defaults to `1.0`):
            DIST's weight of the intra-class relation, >= 0.
        logit_standardization (`bool`, *optional*, defaults to `False`):
            Z-score student and teacher logits per example before the teacher term (Sun et al., "Logit
            Standardization in Knowledge Distillation", CVPR 2024). The T² factor stays and T acts on logits of unit
            standard deviation; the authors use T = 2 with a soft weight of 9 on CIFAR-100.
        teacher_weights (`list[float]` or `dict[str, float]`, *optional*):
            With several teachers (a list or dict as `teacher_model`), the weight of each (list order, or dict keys):
            the soft target is the weighted mean of the teachers' tempered probabilities. Non-negative, normalised to
            sum to 1; equal weights by default. On the command line a JSON list or object (`'[0.7, 0.3]'`).
        teacher_column (`str`, *optional*):
            With several teachers, a dataset column routing each example to one teacher instead of mixing them: an
            integer index into the list of teachers, or a key of the dict of teachers.
        teacher_channels_last (`bool`, *optional*, defaults to `False`):
            Run the teacher, and its 4-D image inputs, in the channels-last memory format: CNN teachers run faster so
            on many CPUs and GPUs (`benchmarks/speed.py` prints the ratio); the logits are equal to float rounding.
        loss_chunk_size (`int`, *optional*):
            Positions per chunk of the token-level soft and hard losses on `(B, L, V)` logits, computed chunk by
            chunk with the same values and gradients to bound their memory (the forward KL and the cross-entropy
            with gradients derived by hand, also faster). `None`: chunked from 2²² logits elements up; 0: never.
        topk_tail (`str`, *optional*, defaults to `"bucket"`):
            With a top-k teacher cache (`teacher_topk_values` / `teacher_topk_indices` columns), how the soft loss
            treats the classes outside the cached k: `"bucket"` (one outcome holding the teacher's remaining mass) or
            `"renormalize"` (both distributions renormalised over the k); see `losses.topk_soft_target_loss`.

    The on-policy fields (`lmbda`, `max_new_tokens`, `generation_temperature`, `generation_top_p`, `seq_kd`) come from
    [`OnPolicyArguments`].

    The hard term honours the Trainer's `label_smoothing_factor` exactly as the Trainer's label smoother does. A plain
    `TrainingArguments` given to [`DistillationTrainer`] is converted with [`from_training_arguments`].
    """

    # Dict fields that the command line gives as JSON strings, parsed by `TrainingArguments.__post_init__`.
    _VALID_DICT_FIELDS = [*TrainingArguments._VALID_DICT_FIELDS, "teacher_model_init_kwargs"]

    alpha: float = field(
        default=0.5,
        metadata={"help": "Weight of the soft (teacher) loss in [0, 1]; the hard label loss gets 1 - alpha."},
    )
    temperature: float = field(
        default=2.0,
        metadata={"help": "Softmax temperature T > 0 for the soft loss, which is scaled by T squared."},
    )
    distillation_loss: str = field(
        default="forward_kl",
        metadata={
            "help": "Divergence between tempered teacher and student distributions.",
            "choices": list(DIVERGENCES),
        },
    )
    jsd_beta: float = field(
        default=0.5,
        metadata={"help": "Mixture weight beta in (0, 1) of the generalized Jensen-Shannon divergence ('jsd')."},
    )
    soft_weight: float | None = field(
        default=None,
        metadata={"help": "Explicit weight (>= 0) of the soft loss, overriding alpha; give hard_weight too."},
    )
    hard_weight: float | None = field(
        default=None,
        metadata={
            "help": "Explicit weight (>= 0) of the hard label loss, overriding 1 - alpha; give soft_weight too."
        },
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={"help": "Precision to run the teacher in.", "choices": list(TEACHER_DTYPES)},
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for from_pretrained when the teacher is given as a Hub id or path."},
    )
    distillation_method: str = field(
        default="kd",
        metadata={
            "help": "Teacher term: kd (Hinton's soft targets), dkd (decoupled KD) or dist (DIST).",
            "choices": list(DISTILLATION_METHODS),
        },
    )
    dkd_alpha: float = field(default=1.0, metadata={"help": "DKD's weight (>= 0) of the target-class term TCKD."})
    dkd_beta: float = field(default=8.0, metadata={"help": "DKD's weight (>= 0) of the non-target-class term NCKD."})
    dkd_warmup_steps: int = field(
        default=0, metadata={"help": "Optimizer steps over which the DKD loss ramps up linearly; 0 for none."}
    )
    dist_beta: float = field(default=1.0, metadata={"help": "DIST's weight (>= 0) of the inter-class relation."})
    dist_gamma: float = field(default=1.0, metadata={"help": "DIST's weight (>= 0) of the intra-class relation."})
    logit_standardization: bool = field(
        default=False,
        metadata={"help": "Z-score student and teacher logits per example before the teacher term (Sun et al.)."},
    )
    # `str` second in the union: HfArgumentParser reads the field as a string (JSON), parsed in __post_init__.
    teacher_weights: list[float] | str | dict[str, float] | None = field(
        default=None,
        metadata={"help": "Weight of each of several teachers: a JSON list, or a JSON object keyed like the teachers"},
    )
    teacher_column: str | None = field(
        default=None,
        metadata={"help": "Dataset column routing each example to one of several teachers (list index or dict key)."},
    )
    teacher_channels_last: bool = field(
        default=False, metadata={"help": "Run a CNN teacher and its image inputs in channels-last memory format."}
    )
    loss_chunk_size: int | None = field(
        default=None,
        metadata={"help": "Positions per chunk of the token-level losses (None: by logits size; 0: no chunks)."},
    )
    topk_tail: str = field(
        default="bucket",
        metadata={"help": "With a top-k teacher cache, the classes outside the top k: 'bucket' or 'renormalize'."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self._validate_distillation_fields()

    def _validate_distillation_fields(self) -> None:
        """Raise a `ValueError` naming the field for any distillation setting out of range (NaN and inf included)."""
        for name in ("alpha", "temperature", "jsd_beta", "soft_weight", "hard_weight", *_METHOD_WEIGHTS):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.distillation_loss not in DIVERGENCES:
            raise ValueError(
                f"distillation_loss must be one of {sorted(DIVERGENCES)}, got {self.distillation_loss!r}."
            )
        if not 0.0 < self.jsd_beta < 1.0:
            raise ValueError(f"jsd_beta must be in the open interval (0, 1), got {self.jsd_beta}.")
        if (self.soft_weight is None) != (self.hard_weight is None):
            raise ValueError("soft_weight and hard_weight must be given together (or neither, to use alpha).")
        for name in ("soft_weight", "hard_weight"):
            value = getattr(self, name)
            if value is not None and value < 0.0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if self.teacher_dtype is not None and self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(
                f"teacher_dtype must be one of {list(TEACHER_DTYPES)} or None, got {self.teacher_dtype!r}."
            )
        if self.teacher_model_init_kwargs is not None and not isinstance(self.teacher_model_init_kwargs, dict):
            raise ValueError(
                "teacher_model_init_kwargs must be a dict, or on the command line a JSON object such as "
                f'\'{{"torch_dtype": "bfloat16"}}\'; got {self.teacher_model_init_kwargs!r}.'
            )
        if self.distillation_method not in DISTILLATION_METHODS:
            raise ValueError(
                f"distillation_method must be one of {list(DISTILLATION_METHODS)}, got {self.distillation_method!r}."
            )
        for name in _METHOD_WEIGHTS:
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not (isinstance(self.dkd_warmup_steps, int) and self.dkd_warmup_steps >= 0):
            raise ValueError(f"dkd_warmup_steps must be an integer >= 0, got {self.dkd_warmup_steps!r}.")
        chunk = self.loss_chunk_size
        if chunk is not None and not (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 0):
            raise ValueError(f"loss_chunk_size must be an integer >= 0 or None, got {self.loss_chunk_size!r}.")
        if self.topk_tail not in TOPK_TAILS:
            raise ValueError(f"topk_tail must be one of {list(TOPK_TAILS)}, got {self.topk_tail!r}.")
        self.teacher_weights = _parse_teacher_weights(self.teacher_weights)
        if self.teacher_column is not None and not (isinstance(self.teacher_column, str) and self.teacher_column):
            raise ValueError(f"teacher_column must be a column name, got {self.teacher_column!r}.")
        if self.teacher_column is not None and self.teacher_weights is not None:
            raise ValueError("teacher_column routes each example to one teacher, so teacher_weights cannot apply too.")
        self._validate_on_policy_fields()

    @classmethod
    def from_training_arguments(
        cls, args: TrainingArguments, **distillation_fields: Any
    ) -> "DistillationTrainingArguments":
        """A `DistillationTrainingArguments` holding every field of `args` as it is (tokens and derived state too)
        plus the distillation fields: their defaults, or `distillation_fields`.

        `args` is not re-validated or rebuilt (a `to_dict()` round trip would replace `hub_token` by a placeholder),
        only the distillation fields are checked. Attributes of a `TrainingArguments` subclass are kept as they are.
        """
        if isinstance(args, cls) and not distillation_fields:
            return args
        own_fields = [spec for spec in fields(cls) if spec.name not in TrainingArguments.__dataclass_fields__]
        unknown = set(distillation_fields) - {spec.name for spec in own_fields}
        if unknown:
            raise TypeError(f"Unknown distillation fields: {sorted(unknown)}.")
        converted = cls.__new__(cls)
        converted.__dict__.update(vars(args))
        for spec in own_fields:
            if spec.name in distillation_fields:
                setattr(converted, spec.name, distillation_fields[spec.name])
            elif spec.name not in converted.__dict__:
                setattr(converted, spec.name, spec.default)
        converted._validate_distillation_fields()
        return converted

    @property
    def loss_weights(self) -> tuple[float, float]:
        """`(soft_weight, hard_weight)`: explicit weights when given, else `(alpha, 1 - alpha)`."""
        if self.soft_weight is not None:
            return self.soft_weight, self.hard_weight
        return self.alpha, 1.0 - self.alpha
