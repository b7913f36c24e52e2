"""Contact sheets: a customer's shots on top, generated images below, one PNG to eyeball quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metagan.grid import make_grid, save_png


def contact_sheet(shots: np.ndarray, generated: np.ndarray, path: str | Path, cols: int = 8) -> Path:
    """shots, generated: uint8 (N, H, W, C). Row 1: the shots; then the generated images."""
    blank = np.full_like(generated[:1], 255)
    rows = [_row(shots[:cols], blank, cols)]
    rows += [_row(generated[i : i + cols], blank, cols) for i in range(0, len(generated), cols)]
    return save_png(make_grid(np.stack(rows)), path, scale=3)


def _row(images: np.ndarray, blank: np.ndarray, cols: int) -> np.ndarray:
    return np.concatenate([images, np.repeat(blank, cols - len(images), 0)]) if len(images) < cols else images
