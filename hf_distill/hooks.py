"""Capturing intermediate outputs of a model by module path with forward hooks, leaving the model's code alone."""

import difflib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from torch import Tensor, nn

# Prefixes that wrappers add to module paths (DDP, DeepSpeed: `module.`; torch.compile: `_orig_mod.`).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside its DDP, DeepSpeed, FSDP and `torch.compile` wrappers, whose module paths users know."""
    return extract_model_from_parallel(model, keep_torch_compile=False)


def resolve_modules(model: nn.Module, names: Iterable[str], role: str = "model") -> dict[str, nn.Module]:
    """The submodules of `model` (unwrapped, see `unwrap_model`) at the paths `names`, e.g. `"layer3"`,
    `"stages.2"`, `"bert.encoder.layer.1"`, `"model.layers.1"`; a wrapper's prefix (`module.`, `_orig_mod.`) is
    accepted and dropped.

    Raises:
        ValueError: a name that is not a module path of the model, with the closest existing paths.
    """
    modules = dict(unwrap_model(model).named_modules(remove_duplicate=False))
    resolved = {}
    for name in names:
        path = name
        while path not in modules and path.startswith(_WRAPPER_PREFIXES):
            path = path.split(".", 1)[1]
        if path not in modules:
            close = difflib.get_close_matches(name, [key for key in modules if key], n=5, cutoff=0.4)
            hint = f" The closest are {close}." if close else ""
            raise ValueError(
                f"The {role} ({type(unwrap_model(model)).__name__}) has no module {name!r}.{hint} Module paths are "
                "the names of `model.named_modules()` on the unwrapped model."
            )
        resolved[name] = modules[path]
    return resolved


def first_tensor(output: Any, name: str = "") -> Tensor:
    """The tensor a module returned: itself, or the first tensor of a tuple, list or dict (`ModelOutput`).

    Transformers layers return tuples whose first element is the hidden states `(B, L, H)`.
    """
    if isinstance(output, Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        if isinstance(value, Tensor):
            return value
    raise TypeError(f"Module {name!r} returned a {type(output).__name__} holding no tensor; hook another module.")


class FeatureRecorder:
    """Records the outputs of the named submodules of a model on each forward pass, into `features`.

    The hooks sit on the submodules themselves, so that a forward through any wrapper (DDP, DeepSpeed,
    `torch.compile`) records them. Each forward overwrites the entry of a module (a module called twice in one forward
    keeps its last output). Hooks exist only between `register()` and `remove()`, or inside `with recorder:` /
    `recorder.hooked()`; until then the model runs as if no recorder existed.

    Args:
        model: the model, wrapped or not; names are resolved at once (see `resolve_modules`), so a wrong one fails
            here, before any forward pass.
        names: module paths to record.
        role: how errors name the model (`"student"`, `"teacher"`).
        detach: store detached outputs (a frozen teacher's features, constant targets).

    Example:
        >>> recorder = FeatureRecorder(model, ["layer3"])
        >>> with recorder:
        ...     logits = model(images)
        >>> recorder.features["layer3"].shape  # (B, C, H, W)
    """

    def __init__(self, model: nn.Module, names: Iterable[str], role: str = "model", detach: bool = False) -> None:
        self.modules = resolve_modules(model, dict.fromkeys(names), role)
        self.detach = detach
        self.features: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    @property
    def is_registered(self) -> bool:
        return bool(self._handles)

    def register(self) -> None:
        """Put the hooks on the modules (once: registering twice is a no-op)."""
        if not self._handles:
            self._handles = [
                module.register_forward_hook(partial(self._record, name)) for name, module in self.modules.items()
            ]

    def remove(self) -> None:
        """Take the hooks off; the outputs recorded so far stay in `features` until `clear()`."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Forget the recorded outputs (and the autograd graph they hold), keeping the hooks."""
        self.features = {}

    @contextmanager
    def hooked(self) -> Iterator[dict[str, Tensor]]:
        """Hooks on for the block, off after it, unless they were already on (then it changes nothing)."""
        outermost = not self.is_registered
        self.register()
        try:
            yield self.features
        finally:
            if outermost:
                self.remove()

    def __enter__(self) -> "FeatureRecorder":
        self.register()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()

    def _record(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        tensor = first_tensor(output, name)
        self.features[name] = tensor.detach() if self.detach else tensor


class FeatureCapture:
    """The recorders of the student's and the teacher's features that a set of loss terms asks for.

    Terms name modules through `student_modules` and `teacher_modules` (see
    [`~hf_distill.terms.LossTerm`]); `hooked()` records both for the duration of a block, `features()` returns
    what was recorded.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None, terms: Iterable[Any]) -> None:
        terms = list(terms)
        student_names = [name for term in terms for name in getattr(term, "student_modules", ())]
        teacher_names = [name for term in terms for name in getattr(term, "teacher_modules", ())]
        if teacher_names and teacher is None:
            raise ValueError(
                f"Loss terms record teacher modules {teacher_names}, but there is no live teacher: pass teacher_model."
            )
        self.student = FeatureRecorder(student, student_names, "student")
        self.teacher = FeatureRecorder(teacher, teacher_names, "teacher", detach=True) if teacher_names else None

    @classmethod
    def for_terms(cls, student: nn.Module, teacher: nn.Module | None, terms: Iterable[Any]) -> "FeatureCapture | None":
        """A capture for the terms' modules, or `None` when no term records any."""
        terms = list(terms)
        if not any(getattr(t, "student_modules", ()) or getattr(t, "teacher_modules", ()) for t in terms):
            return None
        return cls(student, teacher, terms)

    @contextmanager
    def hooked(self) -> Iterator[None]:
        with ExitStack() as stack:
            for recorder in (self.student, self.teacher):
                if recorder is not None:
                    stack.enter_context(recorder.hooked())
            yield

    def record_once(self, model: nn.Module, run: Callable[[], Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The features of one call of `run` (forward passes of the models), with `model` in eval mode, without
        autograd and with the torch RNG forked: the training's state (modes, random numbers) is left as it was."""
        was_training = model.training
        with torch.random.fork_rng(devices=[]):
            model.eval()
            try:
                with torch.no_grad(), self.hooked():
                    run()
                    return self.features()
            finally:
                model.train(was_training)
                self.clear()

    def features(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """`(student_features, teacher_features)` recorded by the last forward passes."""
        teacher_features = dict(self.teacher.features) if self.teacher is not None else {}
        return dict(self.student.features), teacher_features

    def clear(self) -> None:
        self.student.clear()
        if self.teacher is not None:
            self.teacher.clear()
