"""Run directories, task files and tokenizers at fsspec URLs (``gs://``, ``s3://``, ``memory://``): local staging copies, mirrored.

A run directory given as a URL is worked on in a local staging folder (``$DATARATER_STAGING``,
default ``~/.cache/datarater/staging/<hash of the URL>``): `Mirror.pull` makes the folder an exact
copy of the URL before the run (so a run resumes from what the URL holds, on any machine), and
`Mirror.push` uploads what changed and removes what the run removed (rotated checkpoints) after
each checkpoint and at the end. Partial orbax saves (``*.orbax-checkpoint-tmp*``) are never
uploaded (a push killed midway can leave a step folder half uploaded: restore then falls back past
it, as for any damaged step). A staging copy holding files a failed push never sent is the newer
copy: the next pull sends them (when the URL still holds what the last push left) or refuses,
naming both, and never drops them. ``file://`` URLs are plain local paths.

Task files and tokenizer files at a URL are read through `fetch`, a local copy made once per
URL, size and version (mtime / ETag where the filesystem gives one). Writing is one process's: a
multi-process run needs a run directory every process sees (a shared file system), and is refused
a URL. A URL that cannot be reached (network, credentials) is a `UserError` naming the key and URL.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from datarater.errors import UserError

STAGING_ENV = "DATARATER_STAGING"
PUSHED = ".datarater-pushed.json"  # in the staging folder: what is known to be at the URL
PARTIAL = "orbax-checkpoint-tmp"


def is_url(path: str | os.PathLike) -> bool:
    """A URL that needs fsspec (``file://`` is a local path)."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def local_path(path: str | os.PathLike) -> str:
    """``path`` with a ``file://`` prefix removed."""
    s = str(path)
    return s[len("file://"):] if s.startswith("file://") else s


def _fs(url: str, key: str):
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise UserError(f"config key '{key}': no filesystem for '{url}' ({e}); install the package fsspec names "
                        "(gcsfs for gs://, s3fs for s3://)") from None


@contextmanager
def _reaching(key: str, url: str, doing: str) -> Iterator[None]:
    """Errors of the filesystem behind ``url`` (network, credentials, a library's own exception
    types) as one `UserError` naming the key, the URL and what was being done."""
    try:
        yield
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - gcsfs/s3fs/aiohttp raise many types; each is reported, none swallowed
        raise UserError(f"config key '{key}': {doing} '{url}' failed: {type(e).__name__}: {e}; check the network "
                        "and credentials, then rerun") from None


_VERSION_FIELDS = ("ETag", "etag", "md5Hash", "crc32c", "generation", "mtime", "LastModified", "updated", "created")


def _cache_root(kind: str) -> Path:
    base = os.environ.get(STAGING_ENV) or os.path.join("~", ".cache", "datarater", "staging")
    return Path(os.path.expanduser(base)) / kind


def fetch(url: str, key: str) -> str:
    """A local copy of the file at ``url`` (made once per URL and size); local paths pass through."""
    if not is_url(url):
        return local_path(url)
    fs, path = _fs(url, key)
    with _reaching(key, url, "reading"):
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise UserError(f"config key '{key}': '{url}' does not exist") from None
    if info.get("type") == "directory":
        raise UserError(f"config key '{key}': '{url}' is a directory; name the file")
    size = int(info.get("size") or 0)
    version = "\0".join(str(info[k]) for k in _VERSION_FIELDS if info.get(k) is not None)
    digest = hashlib.sha1(f"{url}\0{size}\0{version}".encode()).hexdigest()[:16]
    out = _cache_root("files") / digest / os.path.basename(path.rstrip("/"))
    if not out.is_file() or out.stat().st_size != size:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        with _reaching(key, url, "reading"):
            fs.get_file(path, str(tmp))
        tmp.replace(out)
    return str(out)


class Mirror:
    """A local staging folder for the run directory at ``url`` (see the module docstring)."""

    def __init__(self, url: str, key: str = "run_dir"):
        import jax

        if jax.process_count() > 1:
            raise UserError(f"config key '{key}': a multi-process run cannot mirror '{url}' from one process; give "
                            "a run directory every process sees (a shared file system, or gcsfuse for gs://)")
        self.url, self.key = url.rstrip("/"), key
        self.fs, self.root = _fs(self.url, key)
        self.local = _cache_root("runs") / hashlib.sha1(self.url.encode()).hexdigest()[:16]
        self.resent = 0  # files a failed push had left unsent, sent by `pull`

    def _remote_files(self) -> dict[str, int]:
        with _reaching(self.key, self.url, "listing"):
            return self._list_remote()

    def _list_remote(self) -> dict[str, int]:
        if not self.fs.exists(self.root):
            return {}
        out = {}
        for path, info in self.fs.find(self.root, detail=True).items():
            rel = path[len(self.root.rstrip("/")) + 1:] if path.startswith(self.root.rstrip("/")) else path
            rel = rel.lstrip("/")
            if rel and info.get("type") != "directory":
                out[rel] = int(info.get("size") or 0)
        return out

    def _local_files(self) -> dict[str, tuple[int, int]]:
        out = {}
        for p in self.local.rglob("*"):
            rel = p.relative_to(self.local).as_posix()
            if p.is_file() and rel != PUSHED and PARTIAL not in rel:
                st = p.stat()
                out[rel] = (st.st_size, st.st_mtime_ns)
        return out

    def _pushed(self) -> dict[str, tuple[int, int]] | None:
        """What the last push (or pull) left at the URL, by file: ``(size, mtime_ns)``; None if unknown."""
        record = self.local / PUSHED
        return {k: tuple(v) for k, v in json.loads(record.read_text()).items()} if record.exists() else None

    def _record(self, state: dict[str, tuple[int, int]]) -> None:
        (self.local / PUSHED).write_text(json.dumps({k: list(v) for k, v in state.items()}))

    def pull(self) -> int:
        """Makes the staging folder an exact copy of the URL; returns the files copied down. A
        staging copy a failed push left (files the URL lacks) is sent instead, when the URL still
        holds what the last push left there (``self.resent`` counts them); otherwise refused."""
        import shutil

        remote = self._remote_files()
        before = self._pushed() if self.local.exists() else None
        local = self._local_files() if before is not None else {}
        if before is not None and local != before:  # a failed push: this copy holds what the URL lacks
            if remote and not self._continues(remote, before, local):
                raise UserError(f"config key '{self.key}': {self.local} holds files a failed push never sent to "
                                f"{self.url}, and the URL has changed since; keep one: remove that folder to start "
                                "from the URL, or move the URL's copy aside and rerun to send this one")
            if not remote:
                self._record({})  # nothing there: send the whole copy
            self.resent = self.push()
            return 0
        if self.local.exists():
            shutil.rmtree(self.local)
        self.local.mkdir(parents=True)
        with _reaching(self.key, self.url, "copying down"):
            for rel in remote:
                dest = self.local / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{self.root.rstrip('/')}/{rel}", str(dest))
        self._record(self._local_files())
        return len(remote)

    @staticmethod
    def _continues(remote: dict[str, int], before: dict, local: dict) -> bool:
        """Whether the URL holds only what the last finished push left and what a failed push since
        sent of the staging copy (nobody else wrote there): then sending the rest is safe."""
        sent = all(size in {before.get(rel, (None,))[0], local.get(rel, (None,))[0]} for rel, size in remote.items())
        kept = all(rel in remote for rel, st in before.items() if local.get(rel) == st)
        return sent and kept

    def push(self) -> int:
        """Uploads the files that changed since the last push and removes from the URL those the
        run removed; returns the files uploaded. A push that fails keeps the record of the last
        one that finished, so the next push (or pull) sends everything since."""
        before = self._pushed() or {}
        now = self._local_files()
        base = self.root.rstrip("/")
        changed = [rel for rel, st in now.items() if before.get(rel) != st]
        with _reaching(self.key, self.url, f"pushing the run (kept in {self.local}) to"):
            for rel in changed:
                parent = f"{base}/{rel}".rsplit("/", 1)[0]
                self.fs.makedirs(parent, exist_ok=True)
                self.fs.put_file(str(self.local / rel), f"{base}/{rel}")
            for rel in set(before) - set(now):
                if self.fs.exists(f"{base}/{rel}"):
                    self.fs.rm_file(f"{base}/{rel}")
        self._record(now)
        return len(changed)


def recorded_run_dir(local: str | os.PathLike, mirror: Mirror | None) -> dict[str, str]:
    """What a run's records (config.yaml, summary.json, the trackers) name as its ``run_dir``: the
    URL a staging folder mirrors, with ``staging`` the local copy; else the local path."""
    if mirror is None:
        return {"run_dir": str(local)}
    return {"run_dir": mirror.url, "staging": str(local)}


@contextmanager
def staged(run_dir: str, log: Callable[[str], None] | None = None) -> Iterator[tuple[str, Mirror | None]]:
    """``(local run directory, its Mirror or None)``: a URL is pulled into staging before the body
    and pushed after it (also when the body fails: its finished checkpoints are kept)."""
    if not is_url(run_dir):
        yield local_path(run_dir), None
        return
    mirror = Mirror(run_dir)
    pulled = mirror.pull()
    if log:
        log(f"[remote] {run_dir}: working in {mirror.local} ({pulled} files pulled"
            + (f"; {mirror.resent} files a failed push left, sent now)" if mirror.resent else ")"))
    try:
        yield str(mirror.local), mirror
    except BaseException:
        try:  # keep what finished (checkpoints) at the URL; the run's own error is the one raised
            mirror.push()
        except Exception as e:  # noqa: BLE001 - reported, never in place of the run's error
            if log:
                log(f"[remote] {run_dir}: pushing after the error failed too: {e}")
        raise
    pushed = mirror.push()
    if log:
        log(f"[remote] {run_dir}: {pushed} files pushed")


def fetch_folder(url: str, required: tuple[str, ...], optional: tuple[str, ...], key: str) -> str:
    """A local folder holding the files ``required`` (and those of ``optional`` that exist) of the
    folder at ``url``; e.g. a Hugging Face tokenizer's tokenizer.json and tokenizer_config.json."""
    fs, root = _fs(url, key)
    out = _cache_root("folders") / hashlib.sha1(url.encode()).hexdigest()[:16]
    out.mkdir(parents=True, exist_ok=True)
    for name in required + optional:
        src = f"{root.rstrip('/')}/{name}"
        with _reaching(key, url, "reading"):
            if not fs.exists(src):
                if name in required:
                    raise UserError(f"config key '{key}': '{url.rstrip('/')}/{name}' does not exist")
                continue
            tmp = out / f"{name}.part"
            fs.get_file(src, str(tmp))
        tmp.replace(out / name)
    return str(out)
