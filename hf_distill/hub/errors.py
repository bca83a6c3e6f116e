"""Hub failures (authentication, missing repository, lost connection) as one clear `HubPushError`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message names the repository, the endpoint and what to do about it."""


@contextlib.contextmanager
def hub_errors(repo_id: str, endpoint: str, output_dir: str | os.PathLike) -> Iterator[None]:
    """Turn an HTTP error of the Hub or a network failure raised inside the block into a `HubPushError`.

    The error is found on the exception or its `__cause__` chain (huggingface_hub wraps some, e.g. failed LFS
    uploads, in a `RuntimeError`). A `ValueError` (such as the Hub rejecting the card's metadata) and any other
    exception propagate unchanged, and so does a `HubPushError` from a nested block (`Trainer.push_to_hub` calls
    `init_hf_repo`). Wrap `Trainer.push_to_hub` with it to get the same messages as `push_output_dir`.
    """
    try:
        yield
    except Exception as error:
        cause = None if isinstance(error, (ValueError, HubPushError)) else _hub_cause(error)
        if cause is None:
            raise
        raise HubPushError(describe_hub_error(cause, repo_id, endpoint, output_dir)) from error


def _hub_cause(error: BaseException) -> BaseException | None:
    """The HTTP status error or network error that is `error` or its explicit cause (`raise ... from`), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _status_code(error) is not None or _is_transport_error(error):
            return error
        error = error.__cause__
    return None


def _status_code(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_transport_error(error: BaseException) -> bool:
    """A network-level failure of the HTTP client (httpx or httpx2, whichever `huggingface_hub` uses)."""
    if type(error).__name__ == "OfflineModeIsEnabled":
        return True
    return any(cls.__name__ == "TransportError" and cls.__module__.startswith("httpx") for cls in type(error).__mro__)


def describe_hub_error(error: BaseException, repo_id: str, endpoint: str, output_dir: str | os.PathLike) -> str:
    """One message for a failed push: what happened, to which repo on which endpoint, and what to do."""
    where = f"{repo_id!r} on {endpoint}"
    status = _status_code(error)
    server_message = getattr(error, "server_message", None)
    said = f" The Hub said: {server_message.strip()}" if server_message and server_message.strip() else ""
    if status == 401:
        what = (
            f"Authentication failed (HTTP 401) pushing to {where}: the token is missing or invalid. "
            "Log in with `hf auth login`, set HF_TOKEN, or pass a token with write access."
        )
    elif status == 403:
        what = f"Permission denied (HTTP 403) pushing to {where}: the token cannot write to this namespace."
    elif status == 404:
        what = (
            f"Repository {where} was not found (HTTP 404): check the namespace and name, and that the token "
            "can access it."
        )
    elif status is not None:
        what = f"The Hub answered HTTP {status} while pushing to {where}."
    elif type(error).__name__ == "OfflineModeIsEnabled":
        what = f"Cannot push to {where}: offline mode is on (HF_HUB_OFFLINE is set)."
    elif any(cls.__name__ in ("ConnectError", "ConnectTimeout") for cls in type(error).__mro__):
        what = f"Could not connect to {endpoint} to push {repo_id!r} ({error}). Check the network and HF_ENDPOINT."
    else:
        what = (
            f"The connection to {endpoint} was lost while pushing to {repo_id!r} ({type(error).__name__}: {error}). "
            "Nothing is committed until the Hub answers a commit; run the push again."
        )
    return f"{what}{said} The local folder {str(output_dir)!r} was not modified."
