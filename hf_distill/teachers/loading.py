"""Loading a teacher and a dataset by name for caching, with no student to infer the task head from."""

import json
from pathlib import Path

import datasets
import transformers
from torch import nn

_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_model_for_cache(name_or_path: str) -> nn.Module:
    """A teacher by folder, Hub id or timm name.

    A folder whose `config.json` names `architectures` is a transformers model (loaded with that class); one whose
    `config.json` names a timm `architecture` is a timm model (`local-dir:`). `hf-hub:timm/NAME` and `timm/NAME` are
    timm models on the Hub; any other name is a transformers Hub id, loaded with the class its config names.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"The teacher folder {name_or_path!r} has no config.json.")
        config = json.loads(config_file.read_text())
        if config.get("architectures"):
            return _transformers_class(config["architectures"][0]).from_pretrained(str(path))
        if config.get("architecture"):
            import timm

            return timm.create_model(f"local-dir:{path}", pretrained=True)
        raise ValueError(f"{config_file} names no transformers `architectures` nor a timm `architecture`.")
    if name_or_path.startswith(("hf-hub:", "timm/")):
        import timm

        hub_name = name_or_path if name_or_path.startswith("hf-hub:") else f"hf-hub:{name_or_path}"
        return timm.create_model(hub_name, pretrained=True)
    if name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"The teacher folder {name_or_path!r} does not exist.")
    config = transformers.AutoConfig.from_pretrained(name_or_path)
    if not config.architectures:
        raise ValueError(f"The config of {name_or_path!r} names no architecture to load the teacher with.")
    return _transformers_class(config.architectures[0]).from_pretrained(name_or_path)


def _transformers_class(name: str) -> type:
    model_class = getattr(transformers, name, None)
    if model_class is None:
        raise ValueError(f"transformers has no model class {name!r} (named by the teacher's config.json).")
    return model_class


def load_dataset_for_cache(name_or_path: str, split: str = "train") -> datasets.Dataset:
    """A model-ready dataset: a folder written by `save_to_disk` (a `DatasetDict` gives `split`), or local data files
    (`.json`, `.jsonl`, `.csv`, `.parquet`; several comma-separated)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{name_or_path!r} has the splits {list(loaded)}, not {split!r}.")
            loaded = loaded[split]
        return loaded
    files = [Path(part).expanduser() for part in name_or_path.split(",")]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError(f"No dataset folder or data files at {missing}.")
    builders = {_DATA_FILE_BUILDERS.get(file.suffix) for file in files}
    if None in builders or len(builders) != 1:
        raise ValueError(f"Data files must all be one of {sorted(_DATA_FILE_BUILDERS)}; got {name_or_path!r}.")
    return datasets.load_dataset(builders.pop(), data_files=[str(file) for file in files], split="train")
