"""Turn the configured task source into a packed, verified ``TaskDataset`` (packing only when stale)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from metagan.config import Params
from metagan.data import ShardError, TaskDataset, load_packed, pack_shards, read_source
from metagan.data.shards import MANIFEST, read_manifest, shards_without_manifest

log = logging.getLogger(__name__)


def resolve_source(params: Params, allow_sample: bool = True) -> Path:
    """The configured source, or the sample shipped in the repository when it is absent (unless
    ``allow_sample`` is False: benchmark models trained on six alphabets would be silently wrong)."""
    source = params.resolve(params.data.source)
    if source.exists():
        return source
    if not allow_sample:
        raise FileNotFoundError(f"task source {source} not found (data.source); this job does not fall back to "
                                f"the bundled sample")
    sample = params.resolve(params.data.sample)
    # not a warning here: every ingestion packs the tasks, and most (an installed wheel's, the
    # hour's) train nothing; meta-training warns, once, where it matters (sample_in_place_of_source)
    log.info("task source %s not found; using the bundled sample %s", source, sample)
    return sample


def sample_in_place_of_source(params: Params, tasks: TaskDataset) -> str | None:
    """What to tell a user about to meta-train on ``tasks`` when they are the bundled sample,
    packed because the configured ``data.source`` is absent (the shipped default names a
    checkout's sibling folder, which an installed metagan has not); None when they are what the
    settings (or ``--source``) asked for, or when nothing will be trained on them (``meta.minutes:
    0`` with ``meta.init_checkpoint``, a learner with nothing to train)."""
    from metagan.meta import meta_training_trains

    if not meta_training_trains(params):
        return None
    source, sample = params.resolve(params.data.source), params.resolve(params.data.sample)
    packed_from = str(tasks.manifest.get("source", ""))
    if source.exists() or source == sample or not packed_from.startswith(f"{sample.name} sha256:"):
        return None
    return (f"meta-training on the bundled sample ({tasks.num_classes} characters of {len(set(tasks.class_groups))} "
            f"alphabets) because data.source {os.path.normpath(source)} is absent: set data.source in params.yaml "
            "(`metagan init` writes it) to your task dataset (an Omniglot npz or zip, or a <root>/<class>/<images> "
            "folder), or give --source PATH")


def source_fingerprint(path: Path) -> str:
    """Content hash of a source file or folder tree, so packed data is rebuilt exactly when it changes."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        h.update(f.read_bytes())
    if path.suffix == ".npz" and path.with_name("alphabets.json").is_file():
        h.update(path.with_name("alphabets.json").read_bytes())
    return f"{path.name} sha256:{h.hexdigest()}"


def _packed_from(out: Path, fingerprint: str, params: Params) -> bool:
    """Whether the pack in ``out`` was made from the source ``fingerprint`` names, with the
    configured preprocessing (:class:`ShardError` when its manifest is unreadable)."""
    manifest = read_manifest(out)
    pre = manifest["preprocessing"]
    return (manifest.get("source") == fingerprint and pre.get("size") == params.data.image_size
            and pre.get("channels") == params.data.channels)


def prepare_task_dataset(params: Params, source: str | Path | None = None, force: bool = False,
                         allow_sample: bool = True) -> TaskDataset:
    src = Path(source) if source else resolve_source(params, allow_sample)
    out = params.resolve(params.data.packed_dir)
    fingerprint = source_fingerprint(src)
    # a pack whose manifest was lost but whose shards remain is damaged like any other: read_manifest
    # says so, and it is packed again below (pack_shards replaces nothing but a pack)
    if not force and ((out / MANIFEST).exists() or shards_without_manifest(out)):
        try:
            if _packed_from(out, fingerprint, params):
                return load_packed(out)
        except ShardError as e:
            # the pack is this step's own output, and the source is here: pack it again rather
            # than tell the user to run the step that is running
            log.warning("the packed tasks in %s are damaged (%s): packing them again from %s", out, e.problem, src)
    log.info("packing %s into %s", src, out)
    pack_shards(read_source(src), out, params.data.image_size, params.data.channels,
                params.data.images_per_shard, source=fingerprint)
    return load_packed(out)
