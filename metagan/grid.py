"""Image grids (contact sheets) and PNG writing with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_pil(img: np.ndarray) -> Image.Image:
    """uint8 (H, W, C) with C in {1, 3} -> PIL image."""
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def make_grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """(rows, cols, H, W, C) or (N, H, W, C) uint8 -> one (H', W', C) image on a grey frame."""
    if images.ndim == 4:
        n = images.shape[0]
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        filler = np.full((rows * cols - n, *images.shape[1:]), 255, np.uint8)
        images = np.concatenate([images, filler]).reshape(rows, cols, *images.shape[1:])
    rows, cols, h, w, c = images.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, np.uint8)
    for r in range(rows):
        for q in range(cols):
            y, x = pad + r * (h + pad), pad + q * (w + pad)
            out[y : y + h, x : x + w] = images[r, q]
    return out


def save_png(img: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = to_pil(img)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    pil.save(path)
    return path
