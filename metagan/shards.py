"""A batch of images as one shard: an uncompressed tar holding, for each image, ``<key>.png`` and
``<key>.json`` side by side, the layout WebDataset reads (``webdataset.WebDataset(url)`` yields one
sample per key, ``{"png": ..., "json": ...}``) and any tar tool unpacks.

Why a shard: a customer's batch of 64 loose PNGs costs 64 writes (64 fsyncs on a disk, 64 PUTs to
S3); as one tar it is one, and a training pipeline downstream streams it as is. The members are
written in key order with fixed metadata, so the same images make the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile

SHARD = "images.tar"


def shard_bytes(samples: list[tuple[str, bytes, dict]], mtime: int = 0) -> bytes:
    """``(key, png bytes, metadata)`` per image -> the tar's bytes (keys must be unique, without
    dots: WebDataset splits a member name at its first dot into key and extension)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, png, meta in samples:
            if "." in key or "/" in key:
                raise ValueError(f"shard key {key!r} must not contain '.' or '/'")
            for ext, data in (("png", png), ("json", json.dumps(meta, sort_keys=True).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), mtime, 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_shard(data: bytes) -> list[tuple[str, bytes, dict]]:
    """A shard's samples, in order: ``(key, png bytes, metadata)``."""
    samples: dict[str, dict] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return [(key, parts["png"], json.loads(parts["json"])) for key, parts in samples.items()]
