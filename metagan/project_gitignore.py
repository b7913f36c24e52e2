"""What a project folder's git must not take in: the state metagan writes there.

A project holds what a user edits and versions (``params.yaml``, ``data.dvc``, ``.dvc/config``,
``.dvcignore``) beside what metagan and DVC write, which must stay out of git: the registry's
database and model files (``mlflow/``: backed up, docs/DEPLOY.md, never committed: a commit of a
live SQLite file is a torn copy, and its model files are large), checkpoints and exported models
(``artifacts/``), generated images (``out/``), the data DVC versions (``data/``), its local
remote (``.dvcstore/``) and its cache. DVC ignores ``data/`` and its own cache only where git was
there before it: in a folder without git (``no_scm``) it writes no ``.gitignore``, so a ``git
init`` made later took the data, its cache and the remote whole with ``git add .``; and where it
writes one, it holds ``/data`` alone (a probe of 2026-12-07: ``git add .`` committed ``mlflow/``
and ``out/``).

``metagan init`` writes these lines; DVC's own handling goes on (a path already ignored is one
``dvc add`` leaves alone), and the user's own lines stay.
"""

from __future__ import annotations

from pathlib import Path

from metagan.files import write_text

IGNORED = ("/data/", "/mlflow/", "/artifacts/", "/out/", "/.dvcstore/", "/.dvc/cache/", "/.dvc/tmp/",
           "/.dvc/config.local")
"""The folders metagan writes in a project at the shipped ``paths`` and ``storage`` settings, and
what DVC's ``.dvc/.gitignore`` keeps out where DVC found git (relative to the project folder,
where ``.gitignore`` lies)."""

HEADER = "# written by metagan: its state and outputs (the registry is backed up, not committed)"


WRITTEN = {"/mlflow/": ("mlflow/mlflow.db", "mlflow/fleet.db", "mlflow/artifacts/x", "mlflow/locks/x"),
           "/.dvc/config.local": (".dvc/config.local",)}
"""What metagan writes under a line of :data:`IGNORED` (the others: any file in its folder): where
git already ignores all of them, by whatever lines, the line is not missing."""


def missing_lines(root: str | Path) -> list[str]:
    """The lines of :data:`IGNORED` that ``root/.gitignore`` lacks (``/data`` written by DVC counts
    as ``/data/``): all of them where there is no ``.gitignore``, but those whose files the
    project's git ignores already, by lines of its own (``git check-ignore``: a checkout of this
    repository ignores ``mlflow/mlflow.db`` and keeps ``mlflow/start-server.sh``, so `metagan
    doctor` there told a new user to add ``/mlflow/``, which would have ignored tracked files).
    ``metagan doctor`` names them in a project made before ``init`` wrote them, or by ``demo`` alone."""
    gitignore = Path(root) / ".gitignore"
    present = {_folder(line) for line in (gitignore.read_text() if gitignore.exists() else "").splitlines()}
    missing = [line for line in IGNORED if _folder(line) not in present]
    ignored = _ignored_by_git(root, [p for line in missing for p in _written(line)])
    return [line for line in missing if not set(_written(line)) <= ignored]


def _written(line: str) -> tuple[str, ...]:
    return WRITTEN.get(line, (f"{_folder(line)}/x",))


def _ignored_by_git(root: str | Path, paths: list[str]) -> set[str]:
    """Which of ``paths`` (relative to ``root``) the git work tree holding ``root`` ignores; none
    where there is no git, or no work tree."""
    import subprocess

    if not paths:
        return set()
    try:
        done = subprocess.run(["git", "-C", str(root), "check-ignore", "--stdin"], input="\n".join(paths),
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(done.stdout.splitlines()) if done.returncode in (0, 1) else set()


def ignore_project_state(root: str | Path) -> list[str]:
    """Add to ``root/.gitignore`` each line of :data:`IGNORED` it lacks (:func:`missing_lines`);
    the lines added, none when all were there."""
    gitignore = Path(root) / ".gitignore"
    missing = missing_lines(root)
    if missing:
        text = gitignore.read_text() if gitignore.exists() else ""
        before = text if not text or text.endswith("\n") else text + "\n"
        write_text(gitignore, before + "\n".join([HEADER, *missing]) + "\n")
    return missing


def _folder(line: str) -> str:
    """``/data``, ``/data/`` and ``data/`` name the same top folder here."""
    return line.strip().strip("/")
