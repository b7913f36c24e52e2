"""The batch job: an ONNX generator -> images, a contact sheet, a gallery page and ``manifest.json``
in a folder or an ``s3://`` prefix. The images are loose PNGs (``layout="png"``) or one shard, a
tar of PNG + JSON per image (``layout="shard"``, :mod:`metagan.shards`): five writes a customer
instead of 69. A batch written over another removes the other's files it did not rewrite (what the
other's manifest names, nothing else). onnxruntime, numpy and Pillow only: no torch at serving time."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from metagan.locks import Locker, file_locker, no_lock
from metagan.onnx_runtime import sample_onnx

CONTACT_SHEET = "contact-sheet.png"
GALLERY = "index.html"
MANIFEST = "manifest.json"
UNFINISHED = ".unfinished-batch.json"
"""While a batch replaces another: the files either may have left in the location. Written before
the old manifest goes, removed after the new one is written, so the next batch over a batch killed
midway (whose old manifest is gone) still knows which files to remove."""

PREVIEWS = "_previews"
"""Where previews' batches go in an output location (another alias, a version, a local file):
no customer id starts with "_" (:data:`metagan.uploads.CUSTOMER_ID`), so no customer's batch is
there. Beside the customers' folders, previews named ``<id>-candidate`` or ``<file>-local`` had
written into the folders of customers who bear those names."""

_MANIFEST_ROOM = 64 * 1024
"""The least room kept for the manifest and the unfinished record (more for a batch of many images)."""

log = logging.getLogger(__name__)


class Superseded(Exception):
    """The model a batch was drawn from stopped being the one served before the batch was published
    (a rollback or a promotion meanwhile): nothing was written, or the images were but not the
    manifest, so no reader takes them for a batch."""


# what a batch may remove: a plain name in the location itself (a manifest edited to name
# ``../x`` or ``sub/x`` names nothing to remove)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def png_bytes(img: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    from metagan.grid import to_pil

    pil = to_pil(img)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def contact_sheet_png(images: np.ndarray, max_images: int = 64) -> bytes:
    """The batch at a glance: up to ``max_images`` of it on one grid, enlarged to about 512 px."""
    from metagan.grid import make_grid

    grid = make_grid(images[:max_images])
    return png_bytes(grid, scale=max(1, 512 // max(grid.shape[:2])))


def gallery_html(model: dict, files: list[str], manifest: dict, inline: list[bytes] | None = None) -> bytes:
    """A page to look at a batch in a browser: the contact sheet, then every image (``inline``:
    the images' PNG bytes, embedded in the page, for a batch whose images are in a shard)."""
    title = html.escape(f"{model.get('name', 'model')} v{model.get('version', '?')}")
    size = manifest["image_shape"][1] * 2
    if inline is None:
        imgs = "\n".join(f'<a href="{html.escape(f)}"><img src="{html.escape(f)}" width="{size}" height="{size}" '
                         f'title="{html.escape(f)}"></a>' for f in files)
    else:  # in the page itself: the files are inside the shard, not beside the page
        imgs = "\n".join(f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" width="{size}" '
                         f'height="{size}" title="{html.escape(f)}">' for f, png in zip(files, inline))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}
img{{image-rendering:pixelated;margin:2px;border:1px solid #ccc}}</style>
</head><body>
<h1>{title}</h1>
<p>{manifest['count']} images, seed {manifest['seed']}, made {html.escape(manifest['created'])}
from <code>{html.escape(str(model.get('uri', '')))}</code></p>
<p><img src="{CONTACT_SHEET}" alt="contact sheet"></p>
{imgs}
</body></html>
""".encode()


LAYOUTS = ("png", "shard")


def preview_folder(name: str, what: str) -> str:
    """The folder, under an output location, of a preview of ``name`` (a customer id, or a local
    file's stem): ``_previews/<name>-<what>`` (``candidate``, ``previous``, ``v3``; ``local`` for a
    file, which no alias or version ends in, so a file never draws over a customer's preview)."""
    return f"{PREVIEWS}/{name}-{what}"


def local_lock_of(folder: Path) -> tuple[Path, str]:
    """(folder, name) of a local batch folder's lock: ``.<folder name>.batch.lock`` beside it, where
    every writer of that folder meets it whatever its project, and not in the batch itself."""
    return folder.parent, f".{folder.name}.batch"


def batch_lock_name(out_uri: str) -> str:
    """The lock of one batch location: two batches written into the same place at once (one by
    hand during the night's, say) left the slower one's manifest over the faster one's images."""
    return "metagan-batch-" + hashlib.sha256(str(out_uri).rstrip("/").encode()).hexdigest()[:16]


def holding_the_location(out, lock: Locker | None):
    """The lock of ``out`` (an :class:`~metagan.storage.OutputLocation`): a local folder's is a file
    beside it (:func:`local_lock_of`), so every writer there meets it whatever its project; an S3
    prefix's is the profile's locker's (``lock``: advisory locks on the index's PostgreSQL)."""
    if out.is_s3:
        return (lock or no_lock)(batch_lock_name(out.uri))
    folder, name = local_lock_of(out.root.absolute())
    return file_locker(folder)(name)


def _check_served(still_served: Callable[[], bool] | None, model: dict) -> None:
    if still_served is not None and not still_served():
        raise Superseded(f"{model.get('name')} version {model.get('version')} is no longer the one served")


def files_of(manifest: dict) -> set[str]:
    """The files a batch's manifest (or the unfinished record, ``{"files": [...]}``) names in its
    location: the loose images or the shard that holds them, the contact sheet and the gallery."""
    files = manifest.get("files")
    named = [manifest.get("shard")] if manifest.get("shard") else list(files) if isinstance(files, list) else []
    named += [manifest.get("contact_sheet"), manifest.get("gallery")]
    return {n for n in named if isinstance(n, str) and _PLAIN_NAME.fullmatch(n)} - {MANIFEST, UNFINISHED}


def _named_in(out, relative: str) -> set[str] | None:
    """The files a manifest or the unfinished record at ``relative`` names; None when it is not
    there. An unreadable one names nothing: a warning, and nothing is removed."""
    data = out.read(relative)
    if data is None:
        return None
    try:
        found = json.loads(data)
        if not isinstance(found, dict):
            raise ValueError(f"a JSON {type(found).__name__}, not an object")
        return files_of(found)
    except ValueError as e:  # not JSON (json's error is a ValueError), or not an object
        log.warning("%s/%s is unreadable (%s): the files it names are left in place", out.uri.rstrip("/"),
                    relative, e)
        return set()


def earlier_batch_files(out) -> set[str]:
    """The files an earlier batch left in ``out``: what its manifest names, or, when there is no
    manifest (a batch killed midway), what the unfinished record names. A record beside a manifest
    is stale (the manifest is written after the removals it records) and is not read."""
    named = _named_in(out, MANIFEST)
    if named is None:
        named = _named_in(out, UNFINISHED)
    return named or set()


def run_batch_job(onnx_bytes: bytes, count: int, out_uri: str, seed: int, model: dict, batch_size: int = 256,
                  progress: Callable[[int], None] | None = None, layout: str = "png", out=None,
                  threads: int | None = None, lock: Locker | None = None,
                  still_served: Callable[[], bool] | None = None) -> dict:
    """``count`` images of the ONNX model in ``out_uri`` (loose ``00000.png``... or, with
    ``layout="shard"``, one ``images.tar`` of ``00000.png`` + ``00000.json``...), its contact sheet
    and gallery page, and last ``manifest.json`` (what was made, from which model version, and
    where), so a reader that finds the manifest finds a complete batch, and nothing of an earlier
    batch there beside it (:func:`earlier_batch_files`). Returns the manifest.

    ``progress(n)``: called with the number of images written so far; ``out``: an
    :class:`~metagan.storage.OutputLocation` whose S3 client to reuse for ``out_uri``; ``threads``:
    onnxruntime threads (one in a fan-out task: the other tasks use the other cores); ``lock``: the
    profile's locker, for an S3 location (:func:`holding_the_location`, held from the first write
    to the manifest); ``still_served()``: asked, holding the location, before the first write and
    again before the manifest; False raises :class:`Superseded` (a batch of a model no longer
    served must not replace the customer's batch).
    """
    from metagan.config import MAX_BATCH_IMAGES
    from metagan.errors import BadInput
    from metagan.storage import OutputLocation

    if not 1 <= count <= MAX_BATCH_IMAGES:
        raise BadInput(f"the image count must be 1 to {MAX_BATCH_IMAGES:,}, got {count:,}")
    if seed < 0:
        raise BadInput(f"the seed must be 0 or more, got {seed}")
    if layout not in LAYOUTS:
        raise BadInput(f"unknown batch layout {layout!r}; one of {', '.join(LAYOUTS)}")
    start = time.monotonic()
    images = sample_onnx(onnx_bytes, count, seed=seed, batch_size=batch_size, threads=threads)
    out = out.at(out_uri) if out is not None else OutputLocation(out_uri)
    created = datetime.now(timezone.utc)
    names = [f"{i:05d}.png" for i in range(count)]
    pngs = [png_bytes(img) for img in images]
    manifest = {"model": model, "seed": seed, "count": count, "image_shape": list(images.shape[1:]),
                "created": created.isoformat(timespec="seconds"), "layout": layout, "files": names,
                "contact_sheet": CONTACT_SHEET, "gallery": GALLERY}
    # every file made before the location is touched: its room is checked before the earlier batch's
    # manifest goes, so a full disk fails the batch with the earlier one still published
    if layout == "shard":
        from metagan.shards import SHARD, shard_bytes

        meta = {"model": model.get("name"), "version": model.get("version"), "seed": seed}
        files = {SHARD: shard_bytes([(n.removesuffix(".png"), png, meta | {"index": i})
                                     for i, (n, png) in enumerate(zip(names, pngs))], int(created.timestamp()))}
        manifest["shard"] = SHARD
        images_after = {SHARD: count}
    else:
        files = dict(zip(names, pngs))
        images_after = {name: i + 1 for i, name in enumerate(names)}
    files[CONTACT_SHEET] = contact_sheet_png(images)
    files[GALLERY] = gallery_html(model, names, manifest, pngs if layout == "shard" else None)
    ours = set(files)
    with holding_the_location(out, lock):
        _check_served(still_served, model)
        # the manifest and the unfinished record each name every file: a line per image
        records = max(_MANIFEST_ROOM, 2 * len(json.dumps(manifest, indent=2)))
        out.check_room([len(data) for data in files.values()] + [records], published=MANIFEST)
        # a batch written over an earlier one removes the earlier one's files it does not rewrite,
        # and only those (a user's own files may sit beside a batch); what both batches may leave
        # is recorded first, so a kill at any later point leaves the next batch the list
        earlier = earlier_batch_files(out)
        # a batch killed while writing a file left its temp file; nothing else removes it
        out.remove_stale_writes(earlier | ours | {MANIFEST, UNFINISHED})
        out.write(UNFINISHED, json.dumps({"files": sorted(earlier | ours)}).encode())
        # its manifest goes first, so no reader takes the new images half-written (or an
        # interrupted write's mix of old and new) for the old batch
        out.remove(MANIFEST)
        for name, data in files.items():
            out.write(name, data)
            if progress is not None and name in images_after:
                progress(images_after[name])
        for name in sorted(earlier - ours):  # before the manifest: a folder with one holds that batch alone
            out.remove(name)
        _check_served(still_served, model)
        manifest["seconds"] = round(time.monotonic() - start, 3)
        manifest["location"] = out.uri
        manifest["manifest"] = out.write(MANIFEST, json.dumps(manifest, indent=2).encode())
        out.remove(UNFINISHED)
        return manifest
