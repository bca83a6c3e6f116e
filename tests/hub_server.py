"""A small stand-in for the Hugging Face Hub HTTP API, enough for `huggingface_hub`'s real client to push and pull."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

# Files the Hub stores with LFS (the default `.gitattributes` of a new repo, shortened).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npz", ".zip", ".gz")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()
FAILURE_MODES = ("401", "403", "404", "500", "drop")
_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"


def git_blob_oid(content: bytes) -> str:
    """Git's object id of a blob: sha1 of `b"blob <size>\\0" + content`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class RepoFileEntry:
    """One file of a commit: its content lives in the blob store under `sha256`."""

    sha256: str
    size: int
    git_oid: str
    lfs: bool


@dataclass
class Commit:
    """A commit: full file listing (path -> entry), message and parent."""

    oid: str
    parent: str | None
    message: str
    files: dict[str, RepoFileEntry]


@dataclass
class Repo:
    """A model repository: its branches (name -> commit oid) and every commit by oid."""

    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


class HubError(Exception):
    """An error answered as JSON with the Hub's `X-Error-Code` / `X-Error-Message` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, **body: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class FakeHub:
    """In-memory Hub served over HTTP on 127.0.0.1 (random port), blobs stored under `root`.

    Writes need `Authorization: Bearer <token>` with the server's `token`; reads of public repos are anonymous.
    `fail(mode, path_contains)` makes every matching request answer 401/403/404/500 or drop the connection
    without a response; `requests` records `(method, path)` of every request seen.
    """

    def __init__(self, root: str | Path, token: str = "hf_fake_write_token", user: str = "user"):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.token, self.user = token, user
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.failure: tuple[str, str] | None = None
        self._announced_lfs: set[str] = set()  # oids a batch call handed an upload URL for
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL to use as `HF_ENDPOINT`."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, mode: str | None, path_contains: str = "") -> None:
        """Answer requests whose path contains `path_contains` with `mode` (see `FAILURE_MODES`); `None` heals."""
        if mode is not None and mode not in FAILURE_MODES:
            raise ValueError(f"Unknown failure mode {mode!r}; expected one of {FAILURE_MODES}.")
        self.failure = None if mode is None else (mode, path_contains)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Content of every file of `repo_id` at `revision` (for assertions)."""
        commit = self._commit(self._repo(repo_id), revision)
        return {path: self._read_blob(entry.sha256) for path, entry in commit.files.items()}

    # ---- storage -------------------------------------------------------------------------------------------------

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return self.repos[repo_id]

    def _commit(self, repo: Repo, revision: str) -> Commit:
        oid = repo.branches.get(revision, revision)
        if oid not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _store_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        (self.root / "blobs" / sha256).write_bytes(content)
        return sha256

    def _read_blob(self, sha256: str) -> bytes:
        return (self.root / "blobs" / sha256).read_bytes()

    def _has_blob(self, sha256: str) -> bool:
        return (self.root / "blobs" / sha256).is_file()

    def _add_commit(self, repo: Repo, branch: str, message: str, files: dict[str, RepoFileEntry]) -> Commit:
        parent = repo.branches.get(branch)
        listing = json.dumps({p: e.sha256 for p, e in sorted(files.items())})
        oid = hashlib.sha1(f"{parent}\n{message}\n{listing}\n{len(repo.commits)}".encode()).hexdigest()
        commit = Commit(oid=oid, parent=parent, message=message, files=files)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit

    def _entry(self, content: bytes, path: str) -> RepoFileEntry:
        return RepoFileEntry(
            sha256=self._store_blob(content),
            size=len(content),
            git_oid=git_blob_oid(content),
            lfs=_is_lfs(path, len(content)),
        )

    # ---- API handlers: each returns (status, headers, body) ------------------------------------------------------

    def create_repo(self, payload: dict[str, Any]) -> dict[str, Any]:
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise HubError(400, f"Only model repositories are supported, got {repo_type!r}.")
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo", None, url=url)  # the client reads the url
        repo = Repo(repo_id=repo_id, private=payload.get("visibility") == "private")
        files = {".gitattributes": self._entry(GITATTRIBUTES, ".gitattributes")}
        self._add_commit(repo, "main", "initial commit", files)
        self.repos[repo_id] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def repo_info(self, repo: Repo, revision: str) -> dict[str, Any]:
        commit = self._commit(repo, revision)
        readme = commit.files.get("README.md")
        card_data = _front_matter(self._read_blob(readme.sha256).decode()) if readme else None
        return {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "cardData": card_data if isinstance(card_data, dict) else None,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    def tree(self, repo: Repo, revision: str, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        commit = self._commit(repo, revision)
        prefix = prefix.strip("/")
        entries: dict[str, dict[str, Any]] = {}
        for path, entry in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if not recursive and "/" in rest:
                folder = (prefix + "/" if prefix else "") + rest.split("/")[0]
                entries[folder] = {"type": "directory", "oid": "0" * 40, "size": 0, "path": folder}
                continue
            item: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
            if entry.lfs:
                item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": 134}
            entries[path] = item
        if prefix and not entries:
            raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
        return list(entries.values())

    def preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> dict[str, Any]:
        commit = self._commit(repo, revision)
        answer = []
        for item in payload["files"]:
            path, size = item["path"], int(item["size"])
            lfs = _is_lfs(path, size)
            remote = commit.files.get(path)
            oid = None if remote is None else (remote.sha256 if remote.lfs else remote.git_oid)
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": answer, "commitOid": commit.oid}

    def lfs_batch(self, repo: Repo, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("operation") != "upload":
            raise HubError(400, "Only LFS uploads are supported.")
        objects = []
        for obj in payload["objects"]:
            item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self._has_blob(obj["oid"]):
                self._announced_lfs.add(obj["oid"])
                href = f"{self.url}/_lfs_upload/{obj['oid']}"
                item["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(item)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_put(self, oid: str, content: bytes) -> None:
        if oid not in self._announced_lfs:
            raise HubError(403, f"No upload was requested for the LFS object {oid}.")
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match the LFS oid {oid}.")
        self._store_blob(content)

    def commit(self, repo: Repo, revision: str, ndjson: bytes) -> dict[str, Any]:
        lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit payload starts with a header line.")
        header = lines[0]["value"]
        parent = self._commit(repo, revision)
        if header.get("parentCommit") and header["parentCommit"] != parent.oid:
            raise HubError(412, "The parent commit is not the head of the branch.")
        files = dict(parent.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file":
                files[path] = self._entry(base64.b64decode(value["content"]), path)
            elif key == "lfsFile":
                if not self._has_blob(value["oid"]):
                    raise HubError(422, f"LFS object {value['oid']} for {path} was never uploaded.")
                size = int(value.get("size") or (self.root / "blobs" / value["oid"]).stat().st_size)
                git_oid = git_blob_oid(self._read_blob(value["oid"]))
                files[path] = RepoFileEntry(sha256=value["oid"], size=size, git_oid=git_oid, lfs=True)
            elif key == "deletedFile":
                files.pop(path, None)
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                files = {p: e for p, e in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}.")
        commit = self._add_commit(repo, unquote(revision), header.get("summary", ""), files)
        return {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.url}/{repo.repo_id}/commit/{commit.oid}",
            "commitMessage": commit.message,
            "pullRequestUrl": None,
        }

    def create_branch(self, repo: Repo, branch: str, payload: dict[str, Any]) -> dict[str, Any]:
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = self._commit(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        return {}


def validate_card_yaml(content: str) -> list[str]:
    """Structural checks the Hub runs on a model card's YAML header; returns error messages (empty: valid)."""
    try:
        metadata = _front_matter(content)
    except yaml.YAMLError as error:
        return [f"Invalid YAML: {error}"]
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["The YAML metadata must be a mapping."]
    errors = []
    for key in ("tags", "datasets", "metrics", "language", "base_model"):
        value = metadata.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            errors.append(f'"{key}" must be a string or a list of strings')
    for key in ("library_name", "license", "pipeline_tag"):
        if metadata.get(key) is not None and not isinstance(metadata[key], str):
            errors.append(f'"{key}" must be a string')
    base_models = metadata.get("base_model") or []
    for base_model in [base_models] if isinstance(base_models, str) else base_models:
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(base_model)):
            errors.append(f'"base_model" must be Hub model ids, got {base_model!r}')
    model_index = metadata.get("model-index")
    if model_index is not None:
        errors += _model_index_errors(model_index)
    return errors


def _model_index_errors(model_index: Any) -> list[str]:
    if not isinstance(model_index, list):
        return ['"model-index" must be a list']
    errors = []
    for model in model_index:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append('"model-index[].name" must be a string')
            continue
        for result in model.get("results") or []:
            task, dataset = result.get("task") or {}, result.get("dataset") or {}
            if not isinstance(task.get("type"), str):
                errors.append('"model-index[].results[].task.type" is required')
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                errors.append('"model-index[].results[].dataset" needs "type" and "name"')
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append('"model-index[].results[].metrics" must be a non-empty list')
                continue
            for metric in metrics:
                if not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append('"model-index[].results[].metrics[]" needs "type" and "value"')
    return errors


def _front_matter(content: str) -> Any:
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.DOTALL)
    return yaml.safe_load(match.group(1)) if match else None


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections dropped on purpose (failure mode "drop") are expected: no traceback on stderr."""


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    routes: list[tuple[str, re.Pattern[str], str]] = [
        ("POST", re.compile(r"/api/repos/create"), "create_repo"),
        ("GET", re.compile(r"/api/whoami-v2"), "whoami"),
        ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml"),
        ("GET", re.compile(rf"/api/models/{_REPO}(/revision/(?P<rev>[^/]+))?"), "repo_info"),
        ("GET", re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?P<path>/.*)?"), "tree"),
        ("POST", re.compile(rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
        ("POST", re.compile(rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)"), "commit"),
        ("POST", re.compile(rf"/api/models/{_REPO}/branch/(?P<rev>[^/]+)"), "create_branch"),
        ("POST", re.compile(rf"/{_REPO}\.git/info/lfs/objects/batch"), "lfs_batch"),
        ("PUT", re.compile(r"/_lfs_upload/(?P<oid>[0-9a-f]{64})"), "lfs_put"),
        ("GET", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
        ("HEAD", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ]
    # The LFS upload URL plays the part of a pre-signed storage URL: no Authorization header, only announced oids.
    writes = {"create_repo", "preupload", "commit", "create_branch", "lfs_batch"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            hub.requests.append((method, url.path))
            body = self._read_body()
            if hub.failure is not None and hub.failure[1] in url.path:
                self._fail(hub.failure[0])
                return
            found = [
                (name, m) for verb, pattern, name in routes if verb == method and (m := pattern.fullmatch(url.path))
            ]
            if not found:
                self._send(404, {"error": f"Not found: {method} {url.path}"}, {"X-Error-Message": "Not Found"})
                return
            name, match = found[0]
            params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            try:
                with hub._lock:
                    self._authorize(name, params.get("repo"))
                    getattr(self, f"_{name}")(params, body, parse_qs(url.query))
            except HubError as error:
                headers = {"X-Error-Message": error.message}
                if error.code:
                    headers["X-Error-Code"] = error.code
                self._send(error.status, {"error": error.message, **error.body}, headers)
            except Exception:  # a bug in this server: answer 400 (not retried by the client) and keep the trace
                hub.errors.append(traceback.format_exc())
                self._send(400, {"error": "fake hub error"}, {"X-Error-Message": "fake hub error"})

        def _authorize(self, name: str, repo_id: str | None) -> None:
            header = self.headers.get("Authorization") or ""
            authenticated = header == f"Bearer {hub.token}"
            if header and not authenticated:
                raise HubError(401, "Invalid credentials in Authorization header")
            private = repo_id in hub.repos and hub.repos[repo_id].private
            if (name in writes or private) and not authenticated:
                raise HubError(401, "Invalid username or password.")

        def _fail(self, mode: str) -> None:
            if mode == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status = int(mode)
            messages = {401: "Invalid credentials in Authorization header", 403: "Forbidden", 500: "Internal Error"}
            headers = {"X-Error-Message": messages.get(status, "Repository not found")}
            if status == 404:
                headers["X-Error-Code"] = "RepoNotFound"
            self._send(status, {"error": headers["X-Error-Message"]}, headers)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return b"".join(self._read_chunks())
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _read_chunks(self) -> Iterator[bytes]:
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None):
            body = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        # ---- routes ----

        def _create_repo(self, params: dict, body: bytes, query: dict) -> None:
            self._send(200, hub.create_repo(json.loads(body)))

        def _whoami(self, params: dict, body: bytes, query: dict) -> None:
            if self.headers.get("Authorization") != f"Bearer {hub.token}":
                raise HubError(401, "Invalid username or password.")
            self._send(200, {"type": "user", "name": hub.user, "orgs": [], "auth": {"type": "access_token"}})

        def _validate_yaml(self, params: dict, body: bytes, query: dict) -> None:
            errors = validate_card_yaml(json.loads(body)["content"])
            status = 400 if errors else 200
            self._send(status, {"errors": [{"message": m} for m in errors], "warnings": []})

        def _repo_info(self, params: dict, body: bytes, query: dict) -> None:
            self._send(200, hub.repo_info(hub._repo(params["repo"]), params.get("rev", "main")))

        def _tree(self, params: dict, body: bytes, query: dict) -> None:
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            repo = hub._repo(params["repo"])
            self._send(200, hub.tree(repo, params["rev"], params.get("path", ""), recursive))

        def _preupload(self, params: dict, body: bytes, query: dict) -> None:
            self._send(200, hub.preupload(hub._repo(params["repo"]), params["rev"], json.loads(body)))

        def _commit(self, params: dict, body: bytes, query: dict) -> None:
            self._send(200, hub.commit(hub._repo(params["repo"]), params["rev"], body))

        def _create_branch(self, params: dict, body: bytes, query: dict) -> None:
            payload = json.loads(body) if body else {}
            self._send(200, hub.create_branch(hub._repo(params["repo"]), params["rev"], payload))

        def _lfs_batch(self, params: dict, body: bytes, query: dict) -> None:
            self._send(200, hub.lfs_batch(hub._repo(params["repo"]), json.loads(body)))

        def _lfs_put(self, params: dict, body: bytes, query: dict) -> None:
            hub.lfs_put(params["oid"], body)
            self._send(200, {})

        def _resolve(self, params: dict, body: bytes, query: dict) -> None:
            repo = hub._repo(params["repo"])
            commit = hub._commit(repo, params["rev"])
            entry = commit.files.get(params["path"])
            if entry is None:
                raise HubError(404, f"Entry not found: {params['path']}", "EntryNotFound")
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.sha256 if entry.lfs else entry.git_oid}"'}
            if entry.lfs:
                headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
            self._send(200, None, headers, raw=hub._read_blob(entry.sha256))

    return Handler


@pytest.fixture
def fake_hub(tmp_path: Path) -> Iterator[FakeHub]:
    """A running `FakeHub` for one test, storing its repos under `tmp_path`."""
    with FakeHub(tmp_path / "hub_storage") as hub:
        yield hub
