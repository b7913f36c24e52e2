"""Batch generation with onnxruntime alone (no torch needed at serving time)."""

from __future__ import annotations

from pathlib import Path

from metagan.export import sample_onnx
from metagan.grid import save_png


def generate_pngs(onnx_path: str | Path, count: int, out_dir: str | Path, seed: int = 0,
                  batch_size: int = 256) -> list[Path]:
    """Write ``count`` PNGs (same size, channels and polarity as the training data) to ``out_dir``."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    images = sample_onnx(onnx_path, count, seed=seed, batch_size=batch_size)
    out_dir = Path(out_dir)
    return [save_png(img, out_dir / f"{i:05d}.png") for i, img in enumerate(images)]
