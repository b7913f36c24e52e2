"""Pack a task dataset into a few compressed, checksummed shards, and load it back.

Layout of a packed directory (a DVC output)::

    manifest.json       format, preprocessing, classes, shards with sha256, total_images
    shard-00000.npz     images uint8 (n, H, W, C), labels int32 (index into manifest classes)
    shard-00001.npz     ...

Preprocessing happens once here, so training never decodes an image. Output is byte-for-byte
deterministic (no timestamps in the npz files) so DVC hashes only change when the data does, and
the directory is built aside and swapped in, so a crash never leaves a torn manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metagan.errors import BadInput, Damaged
from metagan.files import save_npz, sha256_file

if TYPE_CHECKING:
    from .sources import ClassImages

log = logging.getLogger(__name__)

FORMAT = "metagan-shards/1"
MANIFEST = "manifest.json"
SHARD_PATTERN = "shard-{:05d}.npz"
_SHARD_NAME = re.compile(r"shard-\d{5,}\.npz")


class ShardError(Damaged, ValueError):
    """A packed dataset is missing, corrupt, or does not match its manifest: damaged state, whose
    message says how to pack it again (:func:`metagan.task_data.prepare_task_dataset`, which
    `metagan ingest` runs, repacks a damaged pack from its source by itself)."""

    ADVICE = ("`metagan ingest` packs the tasks again from their source (or `dvc checkout data.dvc` restores the "
              "version DVC recorded)")

    def __init__(self, problem: str):
        super().__init__(f"{problem}; {self.ADVICE}")
        self.problem = problem


@dataclass
class TaskDataset:
    """All images of a packed dataset in memory, with their class labels."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,), index into class_names
    class_names: list[str]
    class_groups: list[str]
    manifest: dict
    _index: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.images.shape[1:])

    def indices_of(self, class_id: int) -> np.ndarray:
        """Row indices of the images of one class."""
        if not 0 <= class_id < self.num_classes:
            raise IndexError(f"class id {class_id} out of range 0..{self.num_classes - 1}")
        if class_id not in self._index:
            self._index[class_id] = np.flatnonzero(self.labels == class_id)
        return self._index[class_id]

    def groups(self) -> list[str]:
        """Sorted unique groups (e.g. Omniglot alphabets)."""
        return sorted(set(self.class_groups))


# ----------------------------------------------------------------------------------------------


def pack_shards(
    classes: Iterable[ClassImages],
    out_dir: str | Path,
    size: int,
    channels: int,
    images_per_shard: int = 4096,
    source: str = "",
) -> dict:
    """Preprocess every class to (size, size, channels) uint8 and write shards + manifest.

    Replaces ``out_dir`` if it already holds a packed dataset (and refuses to replace any other
    non-empty folder). Returns the manifest.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if images_per_shard <= 0:
        raise ValueError(f"images_per_shard must be positive, got {images_per_shard}")
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        class_entries: list[dict] = []
        shard_entries: list[dict] = []
        pending_images: list[np.ndarray] = []
        pending_labels: list[np.ndarray] = []
        n_pending = 0

        def write_shard(n: int) -> None:
            nonlocal pending_images, pending_labels, n_pending
            images = np.concatenate(pending_images)
            labels = np.concatenate(pending_labels)
            name = SHARD_PATTERN.format(len(shard_entries))
            save_npz(tmp / name, images=images[:n], labels=labels[:n])
            shard_entries.append({"file": name, "count": n, "sha256": sha256_file(tmp / name)})
            pending_images, pending_labels = [images[n:]], [labels[n:]]
            n_pending -= n

        seen: set[str] = set()
        for cls in classes:
            if cls.name in seen:
                raise BadInput(f"duplicate class name {cls.name!r} in the source: two classes of one name would be one")
            seen.add(cls.name)
            images = cls.load(size, channels)
            if len(images) == 0:
                log.warning("class %r has no usable images; left out", cls.name)
                continue
            label = len(class_entries)
            class_entries.append({"name": cls.name, "group": cls.group, "count": len(images)})
            pending_images.append(images)
            pending_labels.append(np.full(len(images), label, np.int32))
            n_pending += len(images)
            while n_pending >= images_per_shard:
                write_shard(images_per_shard)
        if n_pending:
            write_shard(n_pending)
        if not class_entries:
            raise BadInput(f"no images to pack from source {source!r}")

        manifest = {
            "format": FORMAT,
            "preprocessing": {
                "size": size,
                "channels": channels,
                "background": "white",
                "resize": "pad-to-square+lanczos",
            },
            "source": source,
            "classes": class_entries,
            "shards": shard_entries,
            "total_images": sum(s["count"] for s in shard_entries),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the packed data is not secret
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("packed %d images of %d classes into %d shard(s) in %s",
             manifest["total_images"], len(class_entries), len(shard_entries), out_dir)
    return manifest


def shards_without_manifest(root: Path) -> list[Path]:
    """The shards of a pack that lost its manifest (deleted by hand, a partial copy): a folder with
    no ``manifest.json`` that holds shard files and nothing else; empty for any other folder."""
    if not root.is_dir() or (root / MANIFEST).exists():
        return []
    entries = list(root.iterdir())
    shards = [p for p in entries if _SHARD_NAME.fullmatch(p.name) and p.is_file()]
    return sorted(shards) if shards and len(shards) == len(entries) else []


def _check_replaceable(out_dir: Path) -> None:
    """Only ever replace an empty folder or an earlier pack (whole, damaged, or its shards without
    their manifest), never someone's other files."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BadInput(f"{out_dir} exists and is not a folder (data.packed_dir)")
    entries = list(out_dir.iterdir())
    if entries and not (out_dir / MANIFEST).is_file() and not shards_without_manifest(out_dir):
        raise BadInput(  # someone's files where the packed tasks go: data.packed_dir names the wrong folder
            f"refusing to replace {out_dir}: it is not empty and holds no {MANIFEST} "
            "(it does not look like a packed dataset)"
        )


def _swap_in(new: Path, dest: Path) -> None:
    """Move the finished folder into place; the old one is renamed aside, then deleted."""
    if not dest.exists():
        os.replace(new, dest)
        return
    old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
    os.replace(dest, old / dest.name)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------


def load_packed(dir: str | Path, verify: bool = True) -> TaskDataset:
    """Load a packed dataset; with ``verify``, check every shard's sha256 against the manifest."""
    root = Path(dir)
    manifest = read_manifest(root)
    pre = manifest["preprocessing"]
    shape = (pre["size"], pre["size"], pre["channels"])
    n_classes = len(manifest["classes"])

    all_images, all_labels = [], []
    for entry in manifest["shards"]:
        path = root / entry["file"]
        if not path.is_file():
            raise ShardError(f"{path}: shard listed in {MANIFEST} is missing")
        if verify:
            got = sha256_file(path)
            if got != entry["sha256"]:
                raise ShardError(
                    f"{path}: checksum mismatch (manifest sha256 {entry['sha256']}, file {got}); "
                    "the shard is corrupt or was changed after packing"
                )
        try:
            with np.load(path, allow_pickle=False) as npz:
                images, labels = npz["images"], npz["labels"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise ShardError(f"{path}: unreadable shard ({type(e).__name__}: {e})") from None
        n = entry["count"]
        if images.dtype != np.uint8 or images.shape != (n, *shape):
            raise ShardError(f"{path}: images are {images.dtype} {images.shape}, manifest says uint8 {(n, *shape)}")
        if labels.shape != (n,) or (n and not (0 <= labels.min() and labels.max() < n_classes)):
            raise ShardError(f"{path}: labels do not match the manifest ({labels.shape}, {n_classes} classes)")
        all_images.append(images)
        all_labels.append(labels.astype(np.int64))

    images = np.concatenate(all_images) if len(all_images) != 1 else all_images[0]
    labels = np.concatenate(all_labels) if len(all_labels) != 1 else all_labels[0]
    counts = np.bincount(labels, minlength=n_classes).tolist()
    expected = [c["count"] for c in manifest["classes"]]
    if counts != expected or len(labels) != manifest["total_images"]:
        raise ShardError(f"{root}: images per class in the shards do not match {MANIFEST}")
    return TaskDataset(
        images=images,
        labels=labels,
        class_names=[c["name"] for c in manifest["classes"]],
        class_groups=[c["group"] for c in manifest["classes"]],
        manifest=manifest,
    )


def packed_version(dir: str | Path) -> str:
    """The content address of a packed dataset, from its manifest alone (no shard is read): the
    preprocessing, the classes and every shard's sha256, which :func:`load_packed` verifies. What
    a meta-model was trained on, unlike the DVC version of the whole data folder, which also moves
    with every customer's uploads."""
    return manifest_version(read_manifest(Path(dir)))


def manifest_version(manifest: dict) -> str:
    """:func:`packed_version` of a packed dataset's manifest (read from the folder, or from an
    earlier data version)."""
    content = {k: manifest[k] for k in ("preprocessing", "classes", "total_images")}
    content["shards"] = [entry["sha256"] for entry in manifest["shards"]]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_manifest(root: Path) -> dict:
    """A packed dataset's manifest, checked for its format and keys (:class:`ShardError` if not)."""
    path = root / MANIFEST
    if not path.is_file():
        if shards := shards_without_manifest(root):  # a pack that lost its manifest is damaged, not absent
            raise ShardError(f"{path} is missing, though {len(shards)} shard(s) remain")
        raise FileNotFoundError(f"no {MANIFEST} in {root}; pack the dataset first (pack_shards)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise ShardError(f"{path}: format {got!r} is not {FORMAT!r}")
    for key in ("preprocessing", "classes", "shards", "total_images"):
        if key not in manifest:
            raise ShardError(f"{path}: missing key {key!r}")
    return manifest
