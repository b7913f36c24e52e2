"""Batch generation with onnxruntime alone (no torch needed at serving time)."""

from __future__ import annotations

from pathlib import Path

from metagan.export import sample_onnx


def png_bytes(img) -> bytes:
    import io

    from metagan.grid import to_pil

    buf = io.BytesIO()
    to_pil(img).save(buf, format="PNG")
    return buf.getvalue()


def run_batch_job(onnx_bytes: bytes, count: int, out_uri: str, seed: int, model: dict,
                  batch_size: int = 256) -> dict:
    """The nightly job: ONNX model -> ``count`` PNGs + ``manifest.json`` in a folder or S3 prefix."""
    import json
    import time
    from datetime import datetime, timezone

    from metagan.storage import OutputLocation

    start = time.monotonic()
    images = sample_onnx(onnx_bytes, count, seed=seed, batch_size=batch_size)
    out = OutputLocation(out_uri)
    files = [out.write(f"{i:05d}.png", png_bytes(img)) for i, img in enumerate(images)]
    manifest = {"model": model, "seed": seed, "count": count, "image_shape": list(images.shape[1:]),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.monotonic() - start, 3), "files": [Path(f).name for f in files]}
    manifest["manifest"] = out.write("manifest.json", json.dumps(manifest, indent=2).encode())
    return manifest
