"""The command-line front end every recipe shares: a JSON config file whose options the command line overrides."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from transformers import HfArgumentParser


def config_to_argv(config: dict[str, Any]) -> list[str]:
    """Command-line options from a config: `{"alpha": 0.9, "seeds": [0, 1], "flag": true}` →
    `["--alpha", "0.9", "--seeds", "0", "1", "--flag", "true"]`."""
    argv: list[str] = []
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        else:
            argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return argv


def parse_recipe_args(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse command-line arguments into `dataclass_types`; a first argument ending in `.json` is a config file.

    Options after the config file override it: `script.py recipes/configs/digits_demo.json --num_train_epochs 1`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(".json"):
        if not os.path.isfile(argv[0]):
            raise ValueError(f"Config file {argv[0]!r} does not exist.")
        with open(argv[0]) as f:
            argv = config_to_argv(json.load(f)) + argv[1:]
    return HfArgumentParser(dataclass_types).parse_args_into_dataclasses(args=argv)


def end_distributed() -> None:
    """Destroy the process group of an `accelerate launch` run, so that the processes exit cleanly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
