"""Distillation methods by name, as the comparison and the recipes take them: `"dkd+at"` → overrides of the training
arguments (the trainer's teacher term) plus fresh feature loss terms.

A method is a `+`-separated sum of parts:

- at most one logit method, the trainer's teacher term: `kd` (Hinton's soft targets), `dkd` (decoupled KD) or
  `dist` (DIST), with their settings from the training arguments (`temperature`, `dkd_beta`, ...);
- `ls`: logit standardization (Sun et al., CVPR 2024) of that logit method's soft loss (`kd+ls`);
- feature methods, each a [`FeatureTerm`] per module pair: `fitnet` (FitNets' L2 hint through a learned
  projection), `at` (attention transfer), `sp` (similarity preserving), `rkd` (RKD distance and angle terms).

A method without a logit part trains on the labels and the feature terms only (soft weight 0), as the authors' code
(RepDistiller, mdistiller) runs FitNets, AT, SP and RKD. Feature weights are the authors' CIFAR-100 values
(RepDistiller / mdistiller): hints 100, AT 1000 per layer, SP 3000, RKD distance 25 and angle 50.

Module paths: the ones given (`student_modules` / `teacher_modules`, paired by position, used by every feature
part), else each part's defaults for ResNet-style models (timm's `layer1`–`layer4` and `global_pool`): FitNets'
hint on `layer2` (RepDistiller's hint layer 2), AT on every stage, SP on the last stage, RKD on the pooled embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..hooks import resolve_modules
from ..terms import FeatureTerm

LOGIT_METHODS = ("kd", "dkd", "dist")
STANDARDIZATION = "ls"
# part -> (FeatureTerm loss, weight) per term on each module pair
FEATURE_METHODS: dict[str, tuple[tuple[str, float], ...]] = {
    "fitnet": (("l2", 100.0),),
    "at": (("at", 1000.0),),
    "sp": (("sp", 3000.0),),
    "rkd": (("rkd_distance", 25.0), ("rkd_angle", 50.0)),
}
PARTS = (*LOGIT_METHODS, STANDARDIZATION, *FEATURE_METHODS)
# The methods the benchmark runs: each family alone, and a sum.
METHODS = ("kd", "dkd", "dist", "kd+ls", "fitnet", "at", "rkd", "sp", "dkd+at")
RESNET_MODULES = ("layer1", "layer2", "layer3", "layer4", "global_pool")
RESNET_LAYERS: dict[str, tuple[str, ...]] = {
    "fitnet": ("layer2",),
    "at": ("layer1", "layer2", "layer3", "layer4"),
    "sp": ("layer4",),
    "rkd": ("global_pool",),
}


def _is_resnet_style(model: nn.Module) -> bool:
    names = {name for name, _ in model.named_modules()}
    return all(name in names for name in RESNET_MODULES)


@dataclass(frozen=True)
class DistillationMethod:
    """A parsed method string (see the module docstring); build it with :func:`parse_method`.

    Attributes:
        name: the method in canonical order (logit method, `ls`, feature methods as given), e.g. `"dkd+at"`.
        logit_method: `"kd"`, `"dkd"`, `"dist"`, or `None` for feature methods alone (soft weight 0).
        standardize: logit standardization of the logit method's soft loss.
        feature_methods: the feature parts, e.g. `("at",)`.
        student_modules, teacher_modules: module paths given for the feature parts (paired by position), or `None`
            for each part's ResNet-style defaults.
    """

    name: str
    logit_method: str | None
    standardize: bool
    feature_methods: tuple[str, ...]
    student_modules: tuple[str, ...] | None = None
    teacher_modules: tuple[str, ...] | None = None

    def training_overrides(self, args: Any) -> dict[str, Any]:
        """Fields of `DistillationTrainingArguments` `args` to replace for this method's distilled runs.

        Raises:
            ValueError: `args` already picks another teacher term (`distillation_method`, `logit_standardization`).
        """
        method = self.logit_method or "kd"
        if args.distillation_method not in ("kd", method) or (args.logit_standardization and not self.standardize):
            given = f"distillation_method={args.distillation_method}"
            given += f", logit_standardization={args.logit_standardization}"
            raise ValueError(
                f"The training arguments ({given}) disagree with method {self.name!r}: choose the teacher term with "
                "the method alone (e.g. --method dkd, --method kd+ls)."
            )
        overrides: dict[str, Any] = {"distillation_method": method, "logit_standardization": self.standardize}
        if self.logit_method is None:  # labels and feature terms only, as the authors train feature methods
            overrides["soft_weight" if args.soft_weight is not None else "alpha"] = 0.0
        return overrides

    def layers(self, part: str, student: nn.Module, teacher: nn.Module) -> list[tuple[str, str]]:
        """The (student, teacher) module paths of feature part `part`: the given ones, else the ResNet defaults.

        Raises:
            ValueError: no paths given and a model that is not ResNet-style.
        """
        if self.student_modules is not None:
            return list(zip(self.student_modules, self.teacher_modules, strict=True))
        for role, model in (("student", student), ("teacher", teacher)):
            if not _is_resnet_style(model):
                raise ValueError(
                    f"Method {self.name!r}: {part!r} has default module paths only for ResNet-style models (modules "
                    f"{list(RESNET_MODULES)}); the {role} is a {type(model).__name__}. Give --student_modules and "
                    "--teacher_modules (module paths of named_modules(), e.g. timm's stages.2)."
                )
        return [(path, path) for path in RESNET_LAYERS[part]]

    def make_terms(self, student: nn.Module, teacher: nn.Module) -> list[FeatureTerm]:
        """Fresh feature terms for one run (their projections are built and trained per run), checked against the
        modules of `student` and `teacher` (a wrong path lists the closest existing ones)."""
        terms = []
        for part in self.feature_methods:
            pairs = self.layers(part, student, teacher)
            resolve_modules(student, [s for s, _ in pairs], "student")
            resolve_modules(teacher, [t for _, t in pairs], "teacher")
            for loss, weight in FEATURE_METHODS[part]:
                for student_path, teacher_path in pairs:
                    terms.append(FeatureTerm(student_path, teacher_path, loss, weight, name=f"{loss}_{student_path}"))
        return terms

    def describe(self, args: Any) -> dict[str, Any]:
        """What the report states of the method: its name, the teacher term with its settings, the hard term's
        weight and the feature terms with their module paths (those given, else the defaults, which `make_terms`
        has checked for the models) and weights.

        `args` are the distilled runs' arguments, with `training_overrides` applied."""
        entry: dict[str, Any] = {"name": self.name}
        if self.logit_method is None:
            entry["teacher_term"] = None
        else:
            settings: dict[str, Any] = {"temperature": args.temperature, "soft_weight": args.loss_weights[0]}
            if self.logit_method == "kd":
                settings["loss"] = args.distillation_loss
            elif self.logit_method == "dkd":
                settings.update(dkd_alpha=args.dkd_alpha, dkd_beta=args.dkd_beta, warmup_steps=args.dkd_warmup_steps)
            else:
                settings.update(dist_beta=args.dist_beta, dist_gamma=args.dist_gamma)
            term = {"method": self.logit_method, "logit_standardization": self.standardize}
            entry["teacher_term"] = {**term, **settings}
        entry["hard_weight"] = args.loss_weights[1]
        features = []
        for part in self.feature_methods:
            if self.student_modules is not None:
                pairs = list(zip(self.student_modules, self.teacher_modules, strict=True))
            else:
                pairs = [(path, path) for path in RESNET_LAYERS[part]]
            for loss, weight in FEATURE_METHODS[part]:
                features += [
                    {"method": part, "loss": loss, "student_module": s, "teacher_module": t, "weight": weight}
                    for s, t in pairs
                ]
        entry["feature_terms"] = features
        return entry


def parse_method(
    method: str, student_modules: list[str] | None = None, teacher_modules: list[str] | None = None
) -> DistillationMethod:
    """`"dkd+at"` → a [`DistillationMethod`]; see the module docstring for the parts. Module paths go to the feature
    parts; a method without any ignores them.

    Raises:
        ValueError: an empty or unknown part (listing the valid ones), two logit methods, a repeated part, `ls`
            without a logit method, or only one of the two lists of module paths, or lists that do not pair.
    """
    parts = [part.strip().lower() for part in method.split("+")]
    for part in parts:
        if part not in PARTS:
            raise ValueError(
                f"Unknown part {part!r} in method {method!r}: choose parts among {list(PARTS)}, joined by '+' "
                "(e.g. dkd+at)."
            )
    repeated = sorted({part for part in parts if parts.count(part) > 1})
    if repeated:
        raise ValueError(f"Method {method!r} repeats {repeated}.")
    logit = [part for part in parts if part in LOGIT_METHODS]
    if len(logit) > 1:
        raise ValueError(f"Method {method!r} sums the logit methods {logit}: the teacher term is one of them.")
    standardize = STANDARDIZATION in parts
    if standardize and not logit:
        raise ValueError(f"Method {method!r}: 'ls' standardizes a logit method's logits; add one (e.g. kd+ls).")
    features = tuple(part for part in parts if part in FEATURE_METHODS)
    if (student_modules is None) != (teacher_modules is None):
        raise ValueError("Give both --student_modules and --teacher_modules (paired by position), or neither.")
    if student_modules is not None and (not student_modules or len(student_modules) != len(teacher_modules)):
        raise ValueError(
            f"--student_modules {student_modules} and --teacher_modules {teacher_modules} must pair one by one."
        )
    if not features:
        student_modules = teacher_modules = None
    name = "+".join([*logit, *([STANDARDIZATION] if standardize else []), *features])
    return DistillationMethod(
        name,
        logit[0] if logit else None,
        standardize,
        features,
        tuple(student_modules) if student_modules is not None else None,
        tuple(teacher_modules) if teacher_modules is not None else None,
    )


def check_methods(
    methods: list[DistillationMethod],
    args: Any,
    make_student: Callable[[], nn.Module],
    teacher: nn.Module | Callable[[], nn.Module],
    student_teaches: bool = False,
) -> None:
    """Check `methods` before any training: against the training arguments `args` (`training_overrides`) and,
    for feature methods, against the module paths of a student built by `make_student` and of `teacher` (a model,
    or a function that builds one); with `student_teaches`, also with a student as the teacher (born-again
    generations). A wrong path fails listing the closest existing ones.
    """
    models: list[nn.Module] = []
    for method in methods:
        method.training_overrides(args)
        if method.feature_methods:
            if not models:
                models = [make_student(), teacher if isinstance(teacher, nn.Module) else teacher()]
            method.make_terms(*models)
            if student_teaches:
                method.make_terms(models[0], models[0])
