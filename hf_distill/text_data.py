"""Text classification data: load from the Hub, local files, a saved folder or the shipped set, check labels, tokenise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Value
from transformers import PreTrainedTokenizerBase

DATA_DIR = Path(__file__).resolve().parent / "data"
# Datasets shipped with the package, loadable offline by name: name -> (folder under DATA_DIR, class names).
SHIPPED_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "movie_review_snippets": ("movie_review_snippets", ("negative", "positive")),
}
_DATA_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
EVAL_SPLIT_CANDIDATES: tuple[str, ...] = ("validation", "validation_matched", "valid", "dev", "test")


def load_shipped_dataset(name: str = "movie_review_snippets") -> DatasetDict:
    """A dataset shipped under ``hf_distill/data`` (no network), with its label column cast to ``ClassLabel``.

    ``movie_review_snippets``: 2,000 English movie-review sentences (train 1,600 / test 400, balanced), labels
    0 = negative, 1 = positive; MIT licence; source and construction in ``hf_distill/data/movie_review_snippets``.
    """
    if name not in SHIPPED_DATASETS:
        raise ValueError(f"unknown shipped dataset {name!r}; shipped: {', '.join(SHIPPED_DATASETS)}.")
    folder, names = SHIPPED_DATASETS[name]
    root = DATA_DIR / folder
    files = {split.stem: str(split) for split in sorted(root.glob("*.csv"))}
    if not files:
        raise FileNotFoundError(f"the shipped dataset {name!r} has no csv files under {root}; reinstall hf_distill.")
    dataset = datasets.load_dataset("csv", data_files=files)
    return dataset.cast_column("label", ClassLabel(names=list(names)))


def load_text_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
) -> DatasetDict:
    """Load a text dataset from one of four sources, checked in this order.

    1. ``train_file`` / ``validation_file``: local ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet`` files,
       giving splits ``train`` and ``validation``.
    2. ``dataset_name`` naming a shipped dataset (``SHIPPED_DATASETS``, e.g. ``movie_review_snippets``).
    3. ``dataset_name`` naming an existing folder written by ``Dataset(Dict).save_to_disk``.
    4. ``dataset_name`` as a Hub id (e.g. ``stanfordnlp/sst2``, ``stanfordnlp/imdb``) with ``dataset_config_name``.

    Raises:
        ValueError: no source given, or an unsupported file extension.
        FileNotFoundError: a local file or folder that does not exist.
        ConnectionError: a Hub dataset that cannot be reached (offline), with the local alternatives.
    """
    if train_file or validation_file:
        files = {split: path for split, path in (("train", train_file), ("validation", validation_file)) if path}
        suffixes = {Path(path).suffix.lower() for path in files.values()}
        for split, path in files.items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"{split} file {path!r} does not exist.")
        if len(suffixes) != 1 or next(iter(suffixes)) not in _DATA_FILE_BUILDERS:
            raise ValueError(f"data files must share one extension among {', '.join(_DATA_FILE_BUILDERS)}; "
                             f"got {sorted(files.values())}.")
        suffix = next(iter(suffixes))
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        return datasets.load_dataset(_DATA_FILE_BUILDERS[suffix], data_files=files, **kwargs)
    if not dataset_name:
        raise ValueError("give a dataset: dataset_name (a Hub id, a save_to_disk folder or a shipped dataset: "
                         f"{', '.join(SHIPPED_DATASETS)}) or train_file/validation_file.")
    if dataset_name in SHIPPED_DATASETS:
        return load_shipped_dataset(dataset_name)
    path = Path(dataset_name).expanduser()
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    if dataset_name.startswith(("/", "./", "../", "~")) or path.suffix.lower() in _DATA_FILE_BUILDERS:
        raise FileNotFoundError(f"dataset folder {dataset_name!r} does not exist (for data files use "
                                "train_file/validation_file).")
    try:
        return datasets.load_dataset(dataset_name, dataset_config_name)
    except ConnectionError as err:
        raise ConnectionError(f"could not reach dataset {dataset_name!r} on the Hugging Face Hub ({err}). Offline, "
                              "use train_file/validation_file, a save_to_disk folder, or a shipped dataset: "
                              f"{', '.join(SHIPPED_DATASETS)}.") from err


def select_splits(dataset: DatasetDict, train_split: str = "train",
                  eval_split: str | None = None) -> tuple[Dataset, Dataset]:
    """``(train, eval)`` splits; ``eval_split=None`` takes the first of ``EVAL_SPLIT_CANDIDATES`` present."""
    if train_split not in dataset:
        raise ValueError(f"no split {train_split!r} in the dataset; splits: {list(dataset)}.")
    if eval_split is None:
        eval_split = next((name for name in EVAL_SPLIT_CANDIDATES if name in dataset), None)
        if eval_split is None:
            raise ValueError(f"no evaluation split among {EVAL_SPLIT_CANDIDATES} in the dataset (splits: "
                             f"{list(dataset)}); name one with eval_split or give a validation_file.")
    elif eval_split not in dataset:
        raise ValueError(f"no split {eval_split!r} in the dataset; splits: {list(dataset)}.")
    return dataset[train_split], dataset[eval_split]


def encode_labels(dataset: DatasetDict, label_column: str = "label") -> tuple[DatasetDict, list[str]]:
    """Make ``label_column`` a ``ClassLabel`` shared by all splits and return the class names.

    String labels become classes named after their sorted unique values over all splits (so every split uses one
    mapping); integer labels ``0..K-1`` are named ``"0".."K-1"`` unless already a ``ClassLabel``.

    Raises:
        ValueError: missing column, float (regression) labels, or negative integer labels (such as the ``-1`` of
            GLUE test splits, which carry no labels).
    """
    for split, part in dataset.items():
        if label_column not in part.column_names:
            raise ValueError(f"label column {label_column!r} not in split {split!r}; columns: {part.column_names}.")
    feature = next(iter(dataset.values())).features[label_column]
    if isinstance(feature, ClassLabel):
        return dataset, list(feature.names)
    if not isinstance(feature, Value):
        raise ValueError(f"label column {label_column!r} has type {feature}; expected integers or strings.")
    if feature.dtype in ("string", "large_string"):
        names = sorted({str(v) for part in dataset.values() for v in part.unique(label_column)})
    elif feature.dtype.startswith(("int", "uint")):
        values = {int(v) for part in dataset.values() for v in part.unique(label_column)}
        negatives = {split: sorted(v for v in part.unique(label_column) if v < 0) for split, part in dataset.items()}
        negatives = {split: found for split, found in negatives.items() if found}
        if negatives:
            raise ValueError(f"negative labels {negatives} in column {label_column!r}: such splits (e.g. GLUE test "
                             "sets) have no labels; evaluate on a labelled split instead.")
        names = [str(i) for i in range(max(values) + 1)]
    else:
        raise ValueError(f"label column {label_column!r} holds {feature.dtype} values; text classification needs "
                         "integer or string class labels (regression is not supported).")
    return dataset.cast_column(label_column, ClassLabel(names=names)), names


def check_num_labels(num_labels: int, class_names: Sequence[str], what: str = "the model") -> None:
    """Raise ``ValueError`` unless ``num_labels`` (a model's output size) equals the number of dataset classes."""
    if num_labels != len(class_names):
        raise ValueError(f"{what} predicts {num_labels} labels but the dataset has {len(class_names)} classes "
                         f"{list(class_names)}; use a model with a matching head or the right label_column.")


def tokenize_text_dataset(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    max_length: int = 128,
) -> Dataset:
    """Tokenise ``text_column`` (and ``text_pair_column`` for sentence pairs) with the teacher's tokenizer.

    Sequences are truncated to ``max_length`` tokens and left unpadded (pad per batch with
    ``DataCollatorWithPadding``). Returns a dataset with the tokenizer's fields (``input_ids``,
    ``attention_mask``, ...) and ``labels``; every other column is dropped.
    """
    for column in (text_column, text_pair_column, label_column):
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"column {column!r} not in the dataset; columns: {dataset.column_names}.")
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}.")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        pair = batch[text_pair_column] if text_pair_column else None
        encoded = tokenizer(batch[text_column], pair, truncation=True, max_length=max_length)
        encoded["labels"] = batch[label_column]
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")


def limit(dataset: Dataset, max_samples: int | None) -> Dataset:
    """The first ``max_samples`` rows of ``dataset`` (all of them for ``None``)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}.")
    return dataset.select(range(max_samples))
