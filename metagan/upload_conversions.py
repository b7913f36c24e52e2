"""What ingestion does to an upload before the domain check judges it (:mod:`metagan.domain`):
a small drawing on a large page is cropped to it (at the upload's own size), a drawing in light
strokes on a dark background is inverted, and a drawing photographed on paper that is not white
(grey, tinted, unevenly lit, dim) has its paper made white. Anything else is judged as it came."""

from __future__ import annotations

import numpy as np
import torch

BORDER = 2
"""Pixels of the image's edge taken as its background (a drawing's strokes rarely reach it)."""
DARK = 128
"""A background whose median is below this is dark: the drawing is inverted."""


def border_pixels(gray: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, pixels of the ``BORDER``-wide edge): where an upload's background is read."""
    n = len(gray)
    return np.concatenate([gray[:, :BORDER].reshape(n, -1), gray[:, -BORDER:].reshape(n, -1),
                           gray[:, :, :BORDER].reshape(n, -1), gray[:, :, -BORDER:].reshape(n, -1)], 1)


def grays(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) -> (N, H, W) float: the channels' mean."""
    return images.astype(np.float64).mean(-1) if images.ndim == 4 else images.astype(np.float64)


def dark_background(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> bool (N,): light strokes on a dark background (an inverted drawing):
    the border is dark, unless the image is a drawing photographed in dim light (dark ink on dim
    paper: what differs from the border is mostly darker, and it looks drawn, :func:`whitened`),
    which is whitened instead."""
    gray = grays(images)
    background = np.median(border_pixels(gray), 1)
    dark = background < DARK
    if dark.any():
        lighter = ((gray - background[:, None, None]) > STROKE_CONTRAST).sum((1, 2))
        darker = ((background[:, None, None] - gray) > STROKE_CONTRAST).sum((1, 2))
        dim_photo = dark & (darker > lighter)
        if dim_photo.any():
            dim_photo[dim_photo] = whitened(images[dim_photo])[1]
        dark &= ~dim_photo
    return dark


STROKE_CONTRAST = 32
"""A pixel this much lighter or darker than the background is ink (or a lit stroke)."""
PAPER = 240
"""A background whose median is at least this is white paper: the drawing is judged as it is."""
INK_AT_MOST = 0.6
"""Ink is at most this share of its paper's brightness."""
GRAIN_AT_MOST = 0.1
"""Paper's own grain (sensor noise; the robust spread of the border over its brightness) is at
most this: noise, textures and photographs of scenes have more."""
PLAIN_AT_LEAST = 0.6
"""At least this share of a page is paper (within its grain of the paper's brightness)."""


def _windowed(x: torch.Tensor, pool, radius: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(x, (radius,) * 4, mode="replicate")
    return pool(padded, 2 * radius + 1, 1)


def whitened(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drawings photographed on grey, tinted or unevenly lit paper, their paper made white: each
    pixel is divided by its paper's local brightness (the brightest of the lightly blurred image
    around it, over a window wider than a stroke, then smoothed, as document scanners flatten a
    page's lighting; each channel over the same paper), stretched so the paper is white and the
    darkest ink black, and the paper's own grain snapped to white. Only images whose border is not
    white paper and that look drawn are changed: a plain page of little grain with ink apart from it (:data:`GRAIN_AT_MOST`,
    :data:`PLAIN_AT_LEAST`, :data:`INK_AT_MOST`); the others are judged as they came.
    (N, H, W, C) uint8 -> (images, whitened mask)."""
    gray = grays(images)
    todo = np.median(border_pixels(gray), 1) < PAPER
    out = images.copy()
    if not todo.any():
        return out, todo
    x = torch.from_numpy(gray[todo]).float()[:, None]
    radius = max(2, x.shape[-1] // 8)
    paper = _windowed(_windowed(x, torch.nn.functional.avg_pool2d, 1), torch.nn.functional.max_pool2d, radius)
    paper = _windowed(paper, torch.nn.functional.avg_pool2d, radius).clamp_min(1.0)
    ratio = (x / paper).flatten(1)
    ink = torch.quantile(ratio, 0.01, dim=1, keepdim=True)
    ring = torch.from_numpy(border_pixels(ratio.view(-1, *x.shape[-2:]).numpy()))
    level = ring.median(1, keepdim=True).values
    grain = 1.4826 * (ring - level).abs().median(1, keepdim=True).values
    on_paper = ratio >= level - (4 * grain).clamp_min(0.02)  # a page without grain (drawn digitally on grey) too
    inked = ratio <= INK_AT_MOST * level
    # a drawing: a plain page of little grain, and ink apart from it (few pixels between the two,
    # its strokes' soft edges): not a gradient (no ink), noise or a texture (grain, no plain page)
    drawn = ((grain <= GRAIN_AT_MOST * level) & (on_paper.float().mean(1, keepdim=True) >= PLAIN_AT_LEAST)
             & (inked.float().mean(1, keepdim=True) >= 0.01)
             & ((~on_paper & ~inked).float().mean(1, keepdim=True) <= inked.float().mean(1, keepdim=True)))[:, 0]
    rows = np.flatnonzero(todo)[drawn.numpy()]
    # each channel over the same paper, so coloured ink keeps its colour
    channels = torch.from_numpy(images[rows].astype(np.float32))
    channels = channels.permute(0, 3, 1, 2) if images.ndim == 4 else channels[:, None]
    on_paper, ink, level = on_paper[drawn].view(-1, 1, *x.shape[-2:]), ink[drawn, :, None, None], level[drawn, :, None, None]
    white = ((channels / paper[drawn] - ink) / (level - ink).clamp_min(1e-3)).clamp(0, 1)
    white = torch.where(on_paper, torch.ones_like(white), white)
    values = (white * 255).round().to(torch.uint8)
    out[rows] = (values.permute(0, 2, 3, 1) if images.ndim == 4 else values[:, 0]).numpy()
    done = np.zeros(len(images), bool)
    done[rows] = True
    return out, done


INVERTED = "light strokes on a dark background: inverted to dark on white"
WHITENED = "drawn on grey, tinted or unevenly lit paper (a photograph?): the paper made white"


def as_judged(images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The images as the check judges (and ingestion keeps) them: dark-background ones inverted,
    then those on paper that is not white whitened (:func:`whitened`). Returns (images, what was
    done to each: '' for nothing)."""
    inverted = dark_background(images)
    out = images.copy()
    out[inverted] = 255 - out[inverted]
    out, white = whitened(out)
    done = [" and ".join(w for w, d in ((INVERTED, i), (WHITENED, p)) if d) for i, p in zip(inverted, white)]
    return out, done


CROPPED = "a small drawing on a large page: cropped to the drawing"
CROP_PAGE_AT_LEAST = 4
"""Only a page at least this many times the served size across is cropped: a drawing's own frame
(an Omniglot scan is 105 px) keeps its margins and its drawing's size."""
CROP_DRAWING_UNDER = 1 / 3
"""...and only where the drawing spans less than this share of the page's longer side (1.5% of
Omniglot's drawings in their 105 px frames do; an A4 scan of a 4 cm drawing, 0.14)."""
DRAWING_FILLS = 0.65
"""The share of the crop's side the drawing then spans: the median of Omniglot's drawings."""


def cropped_to_drawing(raw: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
    """A decoded upload (H, W[, 3]) uint8 at its own size, cropped to the drawing on it where the
    drawing is small on a large page (an A4 scan at 300 dpi of a drawing a few centimetres wide
    became 7 pixels of a 64 px shot, and a 105 px drawing on a 4,000 px page "blank"; a probe of
    2026-12-07), with the margin a drawing has in its own frame. The ink: what differs from the
    page's border by more than half the most any pixel does, a few stray specks aside; a page whose
    ink spreads wide (a photograph, a texture, dark scanner edges) is left as it is. Returns
    (image, cropped)."""
    h, w = raw.shape[:2]
    if max(h, w) < CROP_PAGE_AT_LEAST * size:
        return raw, False
    ink, step, _ = _page_ink(raw)
    ys, xs = np.nonzero(ink)
    if len(ys) < 5:
        return raw, False
    (y0, y1), (x0, x1) = (np.quantile(v, [0.002, 0.998]) * step for v in (ys, xs))
    extent = max(y1 - y0, x1 - x0) + step
    if extent >= CROP_DRAWING_UNDER * max(h, w) or extent < size / 4:  # a speck stays a speck (the blank check's)
        return raw, False
    half = extent / DRAWING_FILLS / 2
    cy, cx = (y0 + y1 + step) / 2, (x0 + x1 + step) / 2
    top, left = max(0, int(cy - half)), max(0, int(cx - half))
    return raw[top : min(h, int(np.ceil(cy + half))), left : min(w, int(np.ceil(cx + half)))], True


def _page_ink(raw: np.ndarray) -> tuple[np.ndarray, int, float]:
    """(ink mask, step, plain share) of a decoded upload at its own size, read from a copy at most
    ~1,024 px across (every ``step``-th pixel): ink is what differs from the page's border by more
    than half the most any pixel does (and than 48 grey levels), so paper grain and faint rims are
    none; the plain share, the pixels within :data:`STROKE_CONTRAST` of the border's shade."""
    step = max(1, max(raw.shape[:2]) // 1024)
    gray = grays(raw[None, ::step, ::step])[0]
    away = np.abs(gray - float(np.median(border_pixels(gray[None]))))
    return away > max(48.0, 0.5 * float(away.max())), step, float((away < STROKE_CONTRAST).mean())


MARKS_AT_MOST = 40
"""A drawing of one character has a few separate marks (Omniglot's 19,280: at most 7, of 3 pixels or
more); a page of text, a screenshot or a diagram has hundreds (a probe of 2026-12-07 passed them)."""


def separate_marks(raw: np.ndarray) -> int:
    """How many separate marks of ink (8-connected, of 3 pixels or more on the reduced copy) a
    decoded upload at its own size holds on its plain page; 0 where the page is no plain one
    (at least :data:`PLAIN_AT_LEAST` of it): photographs, noise and textures are the domain check's."""
    from scipy import ndimage

    ink, _, plain = _page_ink(raw)
    if plain < PLAIN_AT_LEAST:
        return 0
    labels, n = ndimage.label(ink, structure=np.ones((3, 3)))
    return int((np.bincount(labels.ravel())[1:] >= 3).sum()) if n else 0


TOO_MANY_MARKS = ("it holds {} separate marks, as text, a document, a screenshot or speckle does (a drawing of one "
                  "character has a few): upload one drawing")


def read_from_the_page(raw: np.ndarray, size: int) -> tuple[np.ndarray, str, str]:
    """What ingestion reads of a decoded upload at its own size before bringing it to ``size``:
    (the drawing, its scanner's dark edges made paper and cropped where it is small on a large
    page; what was done, or ''; why it is refused: a page of many separate marks, or '')."""
    raw, edged = without_dark_edges(raw, size)
    raw, cropped = cropped_to_drawing(raw, size)
    marks = separate_marks(raw)
    done = " and ".join(what for what, did in ((DARK_EDGES, edged), (CROPPED, cropped)) if did)
    return raw, done, TOO_MANY_MARKS.format(marks) if marks > MARKS_AT_MOST else ""


DARK_EDGES = "dark scanner edges or corners: made paper"


def without_dark_edges(raw: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
    """A scanned page whose scanner left dark bands, a dark border or black corners (a skewed page)
    with those made the page's paper: they were "covered in a pattern" or baked into the shot (a
    probe of 2026-12-07). Only a light page at least :data:`CROP_PAGE_AT_LEAST` times the served
    size across; the dark regions taken are thick (they survive an opening wider than a pen's
    stroke), cover at least 1% of the page, and either ring it (a frame) or fill 40% of their
    bounding box (a band, a corner's triangle; a bold stroke curves) along its edge: a third of a
    side or more, or in a corner. Bold drawings cropped tight and photographed large lost a stroke
    touching the edge in 2 of 300 (Omniglot's, blown up 12 times). Returns (image, done)."""
    from scipy import ndimage

    h, w = raw.shape[:2]
    if max(h, w) < CROP_PAGE_AT_LEAST * size:
        return raw, False
    step = max(1, max(h, w) // 1024)
    gray = grays(raw[None, ::step, ::step])[0]
    paper = float(np.median(gray))
    if paper < PAPER - 40:
        return raw, False
    width = max(5, max(gray.shape) // 64)
    labels, n = ndimage.label(ndimage.binary_opening(gray < paper / 2, structure=np.ones((width, width))))
    rows, cols = gray.shape
    taken = []
    for i, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        top, bottom, left, right = ys.start == 0, ys.stop == rows, xs.start == 0, xs.stop == cols
        along = ((top or bottom) and xs.stop - xs.start >= cols / 3) or ((left or right) and ys.stop - ys.start >= rows / 3)
        corner, frame = (top or bottom) and (left or right), top and bottom and left and right
        area = int((labels[ys, xs] == i).sum())
        # a band, a border's side or a corner fills much of its box, a frame rings the page; a stroke,
        # even a bold one, curves
        filled = area >= 0.4 * (ys.stop - ys.start) * (xs.stop - xs.start)
        if area >= 0.01 * gray.size and (frame or (filled and (along or corner))):
            taken.append(i)
    if not taken:
        return raw, False
    region = ndimage.binary_dilation(np.isin(labels, taken), iterations=2)  # their soft rims too
    out = raw.copy()
    out[np.repeat(np.repeat(region, step, 0), step, 1)[:h, :w]] = np.uint8(round(paper))
    return out, True
