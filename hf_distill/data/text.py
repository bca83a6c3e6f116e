"""Text data: load from the Hub, local files, a saved folder or the shipped set; check labels; tokenise."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Value
from torch import Tensor
from transformers import PreTrainedTokenizerBase

DATA_DIR = Path(__file__).resolve().parent  # the shipped datasets live beside this module
# Datasets shipped with the package, loadable offline by name: name -> (folder under DATA_DIR, class names).
SHIPPED_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "movie_review_snippets": ("movie_review_snippets", ("negative", "positive")),
}
_DATA_FILE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
}
EVAL_SPLIT_CANDIDATES: tuple[str, ...] = ("validation", "validation_matched", "valid", "dev", "test")
TEXT_COLUMN_CANDIDATES: tuple[str, ...] = ("text", "sentence", "content", "review", "document")


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
       or ``.txt`` files read one line per row into a ``text`` column; splits ``train`` and ``validation``.
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
            raise ValueError(
                f"data files must share one extension among {', '.join(_DATA_FILE_BUILDERS)}; "
                f"got {sorted(files.values())}."
            )
        suffix = next(iter(suffixes))
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        return datasets.load_dataset(_DATA_FILE_BUILDERS[suffix], data_files=files, **kwargs)
    if not dataset_name:
        raise ValueError(
            "give a dataset: dataset_name (a Hub id, a save_to_disk folder or a shipped dataset: "
            f"{', '.join(SHIPPED_DATASETS)}) or train_file/validation_file."
        )
    if dataset_name in SHIPPED_DATASETS:
        return load_shipped_dataset(dataset_name)
    path = Path(dataset_name).expanduser()
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    if dataset_name.startswith(("/", "./", "../", "~")) or path.suffix.lower() in _DATA_FILE_BUILDERS:
        raise FileNotFoundError(
            f"dataset folder {dataset_name!r} does not exist (for data files use train_file/validation_file)."
        )
    try:
        return datasets.load_dataset(dataset_name, dataset_config_name)
    except ConnectionError as err:
        raise ConnectionError(
            f"could not reach dataset {dataset_name!r} on the Hugging Face Hub ({err}). Offline, "
            "use train_file/validation_file, a save_to_disk folder, or a shipped dataset: "
            f"{', '.join(SHIPPED_DATASETS)}."
        ) from err


def select_splits(
    dataset: DatasetDict, train_split: str = "train", eval_split: str | None = None, require_eval: bool = True
) -> tuple[Dataset, Dataset | None]:
    """``(train, eval)`` splits; ``eval_split=None`` takes the first of ``EVAL_SPLIT_CANDIDATES`` present.

    Without any of them, raises ``ValueError`` if ``require_eval``, else returns ``None`` for the eval split.
    """
    if train_split not in dataset:
        raise ValueError(f"no split {train_split!r} in the dataset; splits: {list(dataset)}.")
    if eval_split is None:
        eval_split = next((name for name in EVAL_SPLIT_CANDIDATES if name in dataset), None)
        if eval_split is None and not require_eval:
            return dataset[train_split], None
        if eval_split is None:
            raise ValueError(
                f"no evaluation split among {EVAL_SPLIT_CANDIDATES} in the dataset (splits: "
                f"{list(dataset)}); name one with eval_split or give a validation_file."
            )
    elif eval_split not in dataset:
        raise ValueError(f"no split {eval_split!r} in the dataset; splits: {list(dataset)}.")
    return dataset[train_split], dataset[eval_split]


def encode_labels(dataset: DatasetDict, label_column: str = "label") -> tuple[DatasetDict, list[str]]:
    """Make ``label_column`` a ``ClassLabel`` shared by all splits and return the class names.

    Pass only the splits you will use: every split is checked. String labels become classes named after their sorted
    unique values over all splits (so every split uses one mapping); integer labels ``0..K-1`` are named
    ``"0".."K-1"`` unless already a ``ClassLabel``.

    Raises:
        ValueError: missing column, float (regression) labels, or negative labels (such as the ``-1`` of GLUE test
            splits or IMDB's ``unsupervised`` split, which carry no labels).
    """
    for split, part in dataset.items():
        if label_column not in part.column_names:
            raise ValueError(f"label column {label_column!r} not in split {split!r}; columns: {part.column_names}.")
    feature = next(iter(dataset.values())).features[label_column]
    if not isinstance(feature, (ClassLabel, Value)):
        raise ValueError(f"label column {label_column!r} has type {feature}; expected integers or strings.")
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        names = sorted({str(v) for part in dataset.values() for v in part.unique(label_column)})
        return dataset.cast_column(label_column, ClassLabel(names=names)), names
    if isinstance(feature, Value) and not feature.dtype.startswith(("int", "uint")):
        raise ValueError(
            f"label column {label_column!r} holds {feature.dtype} values; text classification needs "
            "integer or string class labels (regression is not supported)."
        )
    values = {split: [int(v) for v in part.unique(label_column)] for split, part in dataset.items()}
    negatives = {split: sorted(v for v in found if v < 0) for split, found in values.items()}
    negatives = {split: found for split, found in negatives.items() if found}
    if negatives:
        raise ValueError(
            f"negative labels {negatives} in column {label_column!r}: such splits (e.g. GLUE test "
            "sets) have no labels; use labelled splits only."
        )
    if isinstance(feature, ClassLabel):
        return dataset, list(feature.names)
    names = [str(i) for i in range(max(max(found) for found in values.values()) + 1)]
    return dataset.cast_column(label_column, ClassLabel(names=names)), names


def find_text_column(dataset: Dataset, text_column: str | None = None) -> str:
    """``text_column`` if given (checked), else the first of ``TEXT_COLUMN_CANDIDATES`` in the dataset."""
    if text_column is not None:
        if text_column not in dataset.column_names:
            raise ValueError(f"text column {text_column!r} not in the dataset; columns: {dataset.column_names}.")
        return text_column
    found = next((name for name in TEXT_COLUMN_CANDIDATES if name in dataset.column_names), None)
    if found is None:
        raise ValueError(
            f"no text column among {TEXT_COLUMN_CANDIDATES} in the dataset (columns: "
            f"{dataset.column_names}); name it with text_column."
        )
    return found


def check_label_mapping(
    id2label: dict[int, str] | None, num_labels: int, class_names: Sequence[str], what: str = "the teacher"
) -> None:
    """Check that a fine-tuned model's output classes line up with the dataset's classes.

    Raises ``ValueError`` when the number of outputs differs from the number of classes, or when the model's label
    names are the dataset's class names in another order (compared case-insensitively), which would silently swap
    classes. Generic names such as ``LABEL_0`` cannot be checked and are accepted.
    """
    if num_labels != len(class_names):
        raise ValueError(
            f"{what} predicts {num_labels} labels but the dataset has {len(class_names)} classes "
            f"{list(class_names)}; use a model with a matching head or the right label_column."
        )
    model_names = [str((id2label or {}).get(i, "")).lower() for i in range(num_labels)]
    data_names = [str(name).lower() for name in class_names]
    if set(model_names) == set(data_names) and model_names != data_names:
        raise ValueError(
            f"{what}'s labels {model_names} are the dataset's classes {data_names} in another order; "
            "map the dataset labels to the model's ids first."
        )


def tokenize_text_dataset(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str = "label",
    max_length: int = 128,
    pad_to_max_length: bool = False,
) -> Dataset:
    """Tokenise ``text_column`` (found by :func:`find_text_column` if ``None``; plus ``text_pair_column`` for
    sentence pairs) with the teacher's tokenizer.

    Sequences are truncated to ``max_length`` tokens and left unpadded (pad per batch with
    ``DataCollatorWithPadding``) unless ``pad_to_max_length``, which pads every row to ``max_length`` for collators
    that need rows of one length. Returns a dataset with the tokenizer's fields (``input_ids``,
    ``attention_mask``, ...) and ``labels``; every other column is dropped.
    """
    text_column = find_text_column(dataset, text_column)
    for column in (text_pair_column, label_column):
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"column {column!r} not in the dataset; columns: {dataset.column_names}.")
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}.")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        pair = batch[text_pair_column] if text_pair_column else None
        padding = "max_length" if pad_to_max_length else False
        encoded = tokenizer(batch[text_column], pair, truncation=True, max_length=max_length, padding=padding)
        encoded["labels"] = batch[label_column]
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")


def tokenize_for_mlm(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, text_column: str | None = None, block_size: int = 128
) -> Dataset:
    """Token blocks for masked-LM training, as in transformers' ``run_mlm.py``.

    Each non-blank text is tokenised with its special tokens (``[CLS] ... [SEP]``), all are concatenated and cut into
    blocks of ``block_size`` tokens; shorter last blocks are kept (pad per batch with
    ``DataCollatorForLanguageModeling``, which also draws the masks). Returns ``input_ids``, ``attention_mask``
    (and ``token_type_ids`` if the tokenizer makes them); every other column is dropped.
    """
    text_column = find_text_column(dataset, text_column)
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}.")
    columns = dataset.column_names
    dataset = dataset.filter(lambda batch: [bool(t and t.strip()) for t in batch[text_column]], batched=True)
    if len(dataset) == 0:
        raise ValueError(f"column {text_column!r} holds no non-blank text.")
    tokenized = dataset.map(
        lambda batch: tokenizer(batch[text_column]), batched=True, remove_columns=columns, desc="Tokenizing"
    )

    def group(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        joined = {key: list(itertools.chain.from_iterable(values)) for key, values in batch.items()}
        total = len(joined["input_ids"])
        return {
            key: [values[i : i + block_size] for i in range(0, total, block_size)] for key, values in joined.items()
        }

    # blocks are cut within batches of 1000 texts, so each batch's last block may be shorter
    return tokenized.map(group, batched=True, batch_size=1000, desc=f"Grouping into blocks of {block_size}")


def benchmark_inputs(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> Callable[[int], dict[str, Tensor]]:
    """``n -> tokenised batch`` of ``n`` of ``texts`` (cycled), padded to exactly ``max_length`` tokens.

    For ``hf_distill.evaluation.benchmark.benchmark_model``: every timed batch has shape ``(n, max_length)``, so
    latency and throughput do not depend on which sentences were drawn.
    """
    if not texts:
        raise ValueError("benchmark_inputs needs at least one text.")

    def make(n: int) -> dict[str, Tensor]:
        batch = [texts[i % len(texts)] for i in range(n)]
        return dict(
            tokenizer(batch, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        )

    return make


def limit(dataset: Dataset, max_samples: int | None) -> Dataset:
    """The first ``max_samples`` rows of ``dataset`` (all of them for ``None``)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}.")
    return dataset.select(range(max_samples))
