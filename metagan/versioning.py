"""Data versioning: the operations on DVC (each through :func:`metagan.dvc_repo.open_repo`, which
tells its failures apart).

A *data version* is the md5 that DVC records in ``<target>.dvc`` for the tracked folder, kept
verbatim, e.g. ``"cef1ea2dfbe290f57280a38dd663ce33.dir"`` (the ``.dir`` suffix marks a directory
listing in DVC's cache). Keeping DVC's own string means ``git log -S <version> data.dvc`` finds the
commit that introduced it and ``checkout_version`` can hand it back to DVC unchanged.

DVC is driven through its Python API (``dvc.repo.Repo``) rather than the ``dvc`` executable:
each call costs ~0.1-0.3 s instead of ~1 s of CLI start-up, and failures arrive as typed
exceptions, so ``push`` can retry only the transient ones. Two API quirks shape the code:
relative targets are resolved against the *process* cwd, so every target is passed as an
absolute path (the functions work from any cwd); and DVC reports details (which files failed,
which hashes are missing) through logging, so those records are captured into ``DvcError``.
One DVC operation per repository at a time: DVC holds a file lock for each call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from metagan.files import write_text
from metagan.dvc_repo import DvcError, no_dvc_info, open_repo, with_retries
from metagan.retry import RetryPolicy

if TYPE_CHECKING:
    from dvc.repo import Repo

_VERSION_RE = re.compile(r"^[0-9a-f]{32}(\.dir)?$")


def _paths(root: Path, target: str) -> tuple[Path, Path, Path]:
    """(absolute repo root, tracked path, its .dvc file); `target` is relative to the root."""
    root = Path(root).resolve()
    if Path(target).is_absolute() or ".." in Path(target).parts:
        raise ValueError(f"target must be a path inside the repository, got {target!r}")
    path = root / target
    return root, path, path.with_name(path.name + ".dvc")


def _git_root(root: Path) -> Path | None:
    """Top of the git work tree containing `root`, or None when it is not in a git repo."""
    from dvc.scm import SCM, SCMError

    try:
        scm = SCM(str(root), search_parent_directories=True)
    except SCMError:
        return None
    try:
        return Path(scm.root_dir).resolve()
    finally:
        scm.close()


def _config_url(root: Path, remote_url: str) -> str:
    """A remote URL as DVC's config expects it: relative local paths are relative to `root`."""
    from dvc.config_schema import RelPath

    if re.match(r"^\w+://", remote_url) or os.path.isabs(os.path.expanduser(remote_url)):
        return remote_url
    # RelPath makes DVC store the path relative to .dvc/config, so a fresh clone that sits
    # in the same place relative to the remote finds it.
    return RelPath(os.path.normpath(root / remote_url))


def ensure_dvc_repo(
    root: Path,
    remote_url: str,
    remote_name: str = "storage",
    remote_options: Mapping[str, str] | None = None,
) -> None:
    """Initialise DVC in `root` if needed and make `remote_url` the default remote; idempotent.

    `remote_url` is a local folder (relative paths are relative to `root`) or a URL such as
    ``s3://bucket/prefix``; `remote_options` adds non-secret remote settings, e.g.
    ``{"endpointurl": os.environ["S3_ENDPOINT_URL"]}``. Credentials belong in the environment.
    The config file is rewritten only when something changes: a DVC repository made here records
    its remote for everyone (``.dvc/config``); one that exists already (its config committed) gets
    this host's remote as a local override (``.dvc/config.local``, which DVC's own .gitignore keeps
    out of git), so a scale-out run leaves the checkout's committed remote alone.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(root).resolve()
    fresh = not (root / ".dvc").is_dir()
    if fresh:
        git_root = _git_root(root)
        try:
            with no_dvc_info():
                Repo.init(str(root), no_scm=git_root is None, subdir=git_root not in (None, root)).close()
        except DvcException as exc:
            raise DvcError(f"`dvc init` failed in {root}: {exc}") from exc

    ignore_half_written(root)
    url = _config_url(root, remote_url)
    wanted = {"url": url, **(remote_options or {})}
    with open_repo(root, f"dvc remote add --default {remote_name} {remote_url}") as repo:
        level = "repo" if fresh else "local"
        current = repo.config.read()  # merged: the committed config, then this host's overrides
        section = current.get("remote", {}).get(remote_name, {})
        core = current.get("core", {})
        if (
            all(str(section.get(key)) == str(value) for key, value in wanted.items())
            and core.get("remote") == remote_name
            and str(core.get("analytics")).lower() == "false"
        ):
            return
        with repo.config.edit(level) as conf:
            if str(section.get("url")) != str(url):  # options of another URL may not fit this one
                conf["remote"][remote_name] = {}
            conf["remote"].setdefault(remote_name, {}).update(wanted)
            conf["core"]["remote"] = remote_name
            conf["core"]["analytics"] = "false"


HALF_WRITTEN = """
# what a killed run leaves half-written (metagan's temporary folders and files): never data
.*.tmp-*/
.*.old-*/
*.tmp
"""


def ignore_half_written(root: Path) -> None:
    """``.dvcignore`` passes over what a killed run leaves half-written in ``data/`` (a packing's
    ``.tasks.tmp-*`` folder, an atomic write's ``*.tmp``): a run killed while packing left 4 MB of
    partial shards that the next ``dvc add`` versioned and pushed (a probe of 2026-12-07)."""
    path = Path(root) / ".dvcignore"
    try:
        text = path.read_text() if path.exists() else ""
    except OSError:
        return  # DVC itself reports an unreadable ignore file where it matters
    if HALF_WRITTEN.strip().splitlines()[0] not in text:
        write_text(path, text + ("" if text.endswith("\n") or not text else "\n") + HALF_WRITTEN)


def data_version(root: Path, target: str = "data") -> str | None:
    """The md5 recorded in `<target>.dvc` (e.g. ``"<32 hex>.dir"``); None if not tracked."""
    _, _, dvcfile = _paths(root, target)
    if not dvcfile.is_file():
        return None
    try:
        doc = yaml.safe_load(dvcfile.read_text())
        outs = doc["outs"]
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        raise DvcError(f"{dvcfile} is not a valid .dvc file: {exc}") from exc
    if len(outs) != 1:
        raise DvcError(f"{dvcfile} tracks {len(outs)} outputs; expected exactly one")
    return outs[0].get("md5")


def _workspace_status(repo: Repo, dvcfile: Path) -> dict[str, Any]:
    return repo.status(targets=[str(dvcfile)]) if dvcfile.is_file() else {"untracked": []}


def track(root: Path, target: str = "data") -> str:
    """`dvc add <target>` and return the new data version; unchanged data rewrites nothing."""
    root, path, dvcfile = _paths(root, target)
    if not path.exists():
        raise DvcError(f"`dvc add {target}` failed in {root}: {path} does not exist")
    with open_repo(root, f"dvc add {target}") as repo:
        # `dvc add` rewrites the .dvc file (same bytes, new mtime) even when nothing changed;
        # the status check hits DVC's mtime/inode state db, so it costs about the same.
        if _workspace_status(repo, dvcfile):
            repo.add(str(path))
    version = data_version(root, target)
    if version is None:
        raise DvcError(f"`dvc add {target}` left no md5 in {dvcfile}")
    return version


def push(root: Path, target: str = "data", policy: RetryPolicy | None = None) -> None:
    """Upload the tracked version of `target` to the default remote, retrying transient failures
    (`policy`, default ``RetryPolicy.from_env("dvc")``)."""
    root, _, dvcfile = _paths(root, target)

    def attempt() -> None:
        with open_repo(root, f"dvc push {dvcfile.name}") as repo:
            repo.push(targets=[str(dvcfile)])

    with_retries(attempt, f"dvc push {dvcfile.name}", policy)


def pull(root: Path, target: str = "data", force: bool = False, policy: RetryPolicy | None = None) -> None:
    """Download (if needed) and materialise the version recorded in `<target>.dvc`.

    Without `force`, edits in the workspace that were never tracked stop it with a DvcError.
    """
    root, _, dvcfile = _paths(root, target)

    def attempt() -> None:
        with open_repo(root, f"dvc pull {dvcfile.name}") as repo:
            repo.pull(targets=[str(dvcfile)], force=force)

    with_retries(attempt, f"dvc pull {dvcfile.name}", policy)


def checkout(root: Path, target: str = "data", force: bool = False) -> None:
    """Materialise the version recorded in `<target>.dvc` from the local cache only."""
    root, _, dvcfile = _paths(root, target)
    with open_repo(root, f"dvc checkout {dvcfile.name}") as repo:
        repo.checkout(targets=[str(dvcfile)], force=force)


def status(root: Path, target: str = "data", cloud: bool = False) -> dict[str, Any]:
    """What `dvc status [--cloud] <target>.dvc` reports; an empty dict means in sync.

    Local: ``{"data.dvc": [{"changed outs": {"data": "modified"}}]}`` (keys relative to `root`).
    Cloud: ``{"data/x.png": "new"}``: new = only in the local cache, deleted = only on the
    remote, missing = in neither.
    """
    root, _, dvcfile = _paths(root, target)
    if not dvcfile.is_file():
        return {dvcfile.name: "untracked"}
    with open_repo(root, f"dvc status {'--cloud ' if cloud else ''}{dvcfile.name}") as repo:
        result = repo.status(targets=[str(dvcfile)], cloud=cloud)
    if cloud:
        return result
    # local status names stages relative to the process cwd
    return {Path(os.path.relpath(os.path.abspath(key), root)).as_posix(): value for key, value in result.items()}


def status_clean(root: Path, target: str = "data", cloud: bool = False) -> bool:
    """True when `target` matches `<target>.dvc` (and, with `cloud`, the remote holds it)."""
    if status(root, target):
        return False
    return not cloud or all(state == "deleted" for state in status(root, target, cloud=True).values())


def checkout_version(root: Path, version: str, target: str = "data", force: bool = False) -> None:
    """Point `<target>.dvc` at an older data `version` and materialise it from cache or remote.

    Like `git checkout` for data: afterwards `data_version()` returns `version` and the
    workspace matches it; commit `<target>.dvc` or restore it from git to go back. On failure
    the .dvc file is left as it was. Untracked edits in `target` stop it unless `force`.
    """
    if not _VERSION_RE.match(version):
        raise ValueError(f"not a DVC md5 (32 hex digits, optional .dir): {version!r}")
    root, path, dvcfile = _paths(root, target)
    original = dvcfile.read_text() if dvcfile.is_file() else None
    if not force and original is not None and path.exists() and status(root, target):
        raise DvcError(f"{target} has changes not recorded in {dvcfile.name}; track() them or pass force=True")

    doc = yaml.safe_load(original) if original else {"outs": [{"path": path.name}]}
    out = doc["outs"][0]
    for stale in ("md5", "size", "nfiles", "hash"):
        out.pop(stale, None)
    out.update({"md5": version, "hash": "md5"})
    write_text(dvcfile, yaml.safe_dump(doc, sort_keys=False))
    try:
        try:
            checkout(root, target, force=True)
        except DvcError:
            pull(root, target, force=True)
        with open_repo(root, f"dvc add {target}") as repo:
            repo.add(str(path))  # restores size/nfiles in the .dvc file; the md5 stays
    except BaseException:
        if original is None:
            dvcfile.unlink(missing_ok=True)
        else:
            write_text(dvcfile, original)
        raise
    if data_version(root, target) != version:
        raise DvcError(f"`dvc checkout {dvcfile.name}` materialised {data_version(root, target)}, not {version}")


def materialise(root: Path, target: str = "data", version: str | None = None) -> str:
    """Make the workspace hold data `version` (default: the one recorded in `<target>.dvc`), from
    the cache or the remote; returns the version now in the workspace."""
    current = data_version(root, target)
    if version and version != current:
        checkout_version(root, version, target)
        return version
    if current is None:
        raise DvcError("no data version recorded yet: run the ingest flow (metagan ingest) first")
    if not status_clean(root, target):
        pull(root, target)
    return current


def file_at_version(root: Path, version: str, relpath: str) -> bytes | None:
    """The bytes the data folder held at ``relpath`` (inside it) at DVC version ``version`` (a
    ``<md5>.dir`` of :func:`data_version`), read from DVC's local cache; None where the cache
    holds no such listing or file (garbage-collected, another machine's), or the version is none."""
    import json

    if not version.endswith(".dir"):
        return None
    with open_repo(root, "read an earlier data version") as repo:
        cache = repo.cache.local

        def read(oid: str) -> bytes | None:
            path = Path(cache.oid_to_path(oid))
            return path.read_bytes() if path.is_file() else None

        listing = read(version)
        try:
            entries = json.loads(listing) if listing is not None else []
        except ValueError:
            return None
        md5 = next((e.get("md5") for e in entries if isinstance(e, dict) and e.get("relpath") == relpath), None)
        return read(md5) if isinstance(md5, str) else None

