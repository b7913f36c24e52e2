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


def missing_lines(root: str | Path) -> list[str]:
    """The lines of :data:`IGNORED` that ``root/.gitignore`` lacks (``/data`` written by DVC counts
    as ``/data/``): all of them where there is no ``.gitignore``. ``metagan doctor`` names them in a
    project made before ``init`` wrote them, or by ``demo`` alone."""
    gitignore = Path(root) / ".gitignore"
    present = {_folder(line) for line in (gitignore.read_text() if gitignore.exists() else "").splitlines()}
    return [line for line in IGNORED if _folder(line) not in present]


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
