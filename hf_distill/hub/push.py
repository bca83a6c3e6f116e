"""Pushing the student of a distilled output folder to the Hub, in one commit, with its model card."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .card_info import card_from_output_dir
from .errors import hub_errors
from .files import MODEL_FILES, README_NAME, select_upload_files

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, ModelCard


def push_output_dir(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload distilled student",
    token: str | None = None,
    endpoint: str | None = None,
    model_card: ModelCard | None = None,
    refresh_card: bool = False,
    include_training_args: bool = False,
    include_checkpoints: bool = False,
) -> CommitInfo:
    """Push the student of a distilled output folder to a Hub model repository, in one commit.

    Creates the repository if needed (`create_repo(exist_ok=True)`) and the branch `revision` if it is new, then
    commits the files chosen by `select_upload_files` plus a model card: `model_card` if given, else the folder's
    `README.md`, else (or with `refresh_card`) a card built from its `report.json` and `config.json` by
    `hf_distill.card_info.card_from_output_dir`. The folder itself is only read, never written, so a failed push
    leaves it exactly as it was.

    Args:
        output_dir: a folder written by `DistillationTrainer.save_model` (and a report), holding the student.
        repo_id: `namespace/name` of the model repository.
        private: make a new repository private (no effect on an existing one).
        revision: branch to commit to (created from `main` if missing); default `main`.
        commit_message: summary of the commit.
        token: Hub token with write access; default: the logged-in token (`hf auth login`, `HF_TOKEN`).
        endpoint: Hub URL; default `HF_ENDPOINT` or https://huggingface.co.
        model_card: card to push as `README.md`, replacing any in the folder.
        refresh_card: rebuild the card from the folder even if it has a `README.md`.
        include_training_args, include_checkpoints: see `select_upload_files`.

    Returns:
        The `CommitInfo` of the commit (`.oid`, `.commit_url`).

    Raises:
        ValueError: the folder is missing or holds no model weights.
        HubPushError: the Hub refused the push (401/403 authentication, 404 repository) or could not be reached.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(output_dir)
    if not folder.is_dir():
        raise ValueError(f"Output folder {str(folder)!r} does not exist.")
    files = select_upload_files(folder, include_training_args, include_checkpoints)
    if not any(name in files for name in MODEL_FILES):
        raise ValueError(f"{str(folder)!r} holds none of {list(MODEL_FILES)}: is it a distilled output folder?")
    if model_card is None and (refresh_card or README_NAME not in files):
        model_card = card_from_output_dir(folder, repo_id=repo_id)
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
    if model_card is not None:
        operations = [op for op in operations if op.path_in_repo != README_NAME]
        operations.append(CommitOperationAdd(path_in_repo=README_NAME, path_or_fileobj=str(model_card).encode()))

    api = HfApi(endpoint=endpoint, token=token, library_name="hf_distill")
    with hub_errors(repo_id, api.endpoint, folder):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
