"""Decode any image Pillow reads into the dataset's one convention, and convert to/from tensors.

The convention, shared by the packed task datasets and by customer uploads, is:

- uint8 arrays of shape (size, size, channels); channels is 1 (grayscale) or 3 (RGB);
- a WHITE background with dark strokes, as in Omniglot. Transparent pixels are composited onto
  white and non-square images are padded to a square with white, so an RGBA logo and a
  scanned drawing end up looking alike. Nothing is inverted automatically: an image drawn light
  on dark stays light on dark;
- pad to square first, then resize with Lanczos, so the aspect ratio is never distorted (an image
  longer than ``MAX_CANVAS_SIDE`` is first shrunk by a whole factor, so the square stays bounded).

Every decoding failure is an :class:`ImageError` that names the file and the reason, because the
callers (dataset ingest, customer upload) need to tell a person which file to fix.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
WHITE = 255
# The longest side padded to a square as it is; a longer image is first shrunk by a whole factor.
# The pixel limit bounds width x height, not the square: a 1 x 100,000 strip (a 300-byte PNG) padded
# as it is took 10 GB and 2 minutes, a 1 x 40,000,000 one had ingestion killed for memory.
MAX_CANVAS_SIDE = 8192


class ImageError(ValueError):
    """An image file could not be turned into a training image; the message names file and reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self):
        # Keep the exception picklable (Prefect and multiprocessing pickle task errors).
        return (type(self), (self.name, self.reason))


def load_image(
    path: str | Path, size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1
) -> np.ndarray:
    """Read an image file and return it as uint8 (size, size, channels), white background.
    ``min_side``: refuse an image whose longer side is shorter (see :func:`decode_image`)."""
    return preprocess_array(read_image(path, max_pixels, min_side), size, channels)


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> np.ndarray:
    """An image file decoded at its own size (:func:`decode_image`), or :class:`ImageError`."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise ImageError(name, "no such file")
    if path.is_dir():
        raise ImageError(name, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(name, "empty file (0 bytes)")
    with open(path, "rb") as f:
        return decode_image(f, name, max_pixels, min_side)


def load_image_bytes(
    data: bytes, name: str, size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Like :func:`load_image` for encoded bytes (a zip member, an upload); ``name`` is for errors."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    raw = decode_image(io.BytesIO(data), name, max_pixels)
    return preprocess_array(raw, size, channels)


def decode_image(fp: BinaryIO, name: str, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> np.ndarray:
    """Decode the first frame of an encoded image to uint8 (H, W) grayscale or (H, W, 3) RGB.

    Applies EXIF orientation, scales 16/32-bit and float images to 8 bits and composites alpha
    onto white. The output keeps the native resolution; :func:`preprocess_array` does the rest.
    An image whose longer side is under ``min_side`` pixels is refused as too small.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    try:
        with Image.open(fp) as im:
            if im.format == "EPS":
                # Pillow draws PostScript by running Ghostscript on the file wherever `gs` is
                # installed: an upload would be a program run here (`{} loop` never ends)
                raise ImageError(name, "a PostScript (EPS) file: a program, not a picture, and never run here; "
                                       "export the drawing as PNG or JPEG")
            # Image.open only parses the header, so the pixel count is known before any
            # decompression. Checking it here gives a per-call limit without touching Pillow's
            # process-wide Image.MAX_IMAGE_PIXELS (which other threads may rely on).
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(
                    name,
                    f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                    "(adapt.max_image_pixels; possible decompression bomb)",
                )
            if w == 0 or h == 0:
                raise ImageError(name, f"image has no pixels ({w}x{h})")
            if max(w, h) < min_side:
                raise ImageError(name, f"{w}x{h} pixels: too small to hold a drawing's strokes; upload it at "
                                       f"least {min_side} pixels across (a scan is about 100)")
            if im.format in ("WMF", "EMF"):  # Pillow identifies them but draws them only on Windows
                raise ImageError(name, f"a Windows metafile ({im.format}: a vector format, not pixels): export the "
                                       "drawing as PNG or JPEG")
            if im.format == "TIFF" and (pages := _full_pages(im)) > 1:
                # a scanner's multi-page file: its later drawings were dropped unsaid (a probe of 2026-12-07)
                raise ImageError(name, f"a TIFF of {pages} pages: one drawing is read from a file; save each "
                                       "page as its own file")
            im.seek(0)  # animated GIF/APNG/WebP: the first frame is the image
            im.load()  # decode now, so truncation surfaces here rather than later
            if im.format == "JPEG" and (missing := _grey_rows_at_the_end(im)):
                raise ImageError(name, f"a damaged JPEG: its data ends early (the last {missing} of {h} rows "
                                       "of pixels are missing); upload the file again")
            im = ImageOps.exif_transpose(im)
            return _to_gray_or_rgb(im, name)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        # Pillow's own global guard (over 2x Image.MAX_IMAGE_PIXELS) fires inside Image.open, before
        # the check above: its words ("could be decompression bomb DOS attack") were a second message
        raise ImageError(name, _bomb_reason(e, max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageError(name, _unread_format(fp)) from None
    except NotImplementedError as e:
        # a variant of a format Pillow knows but does not decode (a DDS texture's pixel format):
        # it escaped every customer's ingestion as an internal error (probe of 2026-12-06)
        raise ImageError(name, f"an image format variant Pillow cannot decode ({e})") from None
    except ValueError as e:
        if "MAX_TEXT_CHUNK" not in str(e):
            raise ImageError(name, f"truncated or corrupt image data (ValueError: {e})") from None
        # an editor's history or XMP packet over Pillow's bound on text chunks (a bomb guard): the pixels are fine
        raise ImageError(name, "its metadata (a PNG text chunk: an editor's history, XMP) is larger than is read "
                               "here: save the image again without metadata") from None
    except (OSError, SyntaxError, EOFError) as e:
        # Truncated or corrupt data: Pillow raises OSError ("image file is truncated"),
        # SyntaxError (broken PNG chunks) or ValueError depending on the decoder.
        raise ImageError(name, f"truncated or corrupt image data ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 (untrusted bytes: a decoder may raise anything, IndexError, struct.error...)
        # a failure no one listed above is still this file's, never every customer's
        raise ImageError(name, f"the image decoder failed on it ({type(e).__name__}: {e})") from None


def _full_pages(im: Image.Image) -> int:
    """The pages of a multi-frame image at least half as large as its first (a TIFF may also hold
    a reduced copy of its page, a thumbnail, as a frame)."""
    try:
        frames = im.n_frames
    except (AttributeError, OSError, ValueError, EOFError):
        return 1
    area = im.size[0] * im.size[1]
    pages = 1
    for i in range(1, frames):
        try:
            im.seek(i)
        except (OSError, ValueError, EOFError):
            break
        pages += im.size[0] * im.size[1] >= area / 2
    im.seek(0)
    return pages


def _grey_rows_at_the_end(im: Image.Image) -> int:
    """How many whole rows at the bottom of a decoded JPEG are the decoder's fill for data that is
    missing: exactly mid-grey (128 in every channel), at least one block (8 rows). libjpeg ends a
    scan cut short (a premature marker, a copy stopped midway with its end marker) that way and
    says so only as a warning, which Pillow does not pass on: the image was taken as a drawing
    half covered in grey. A drawing's paper is never exactly that grey to the last row."""
    if im.mode not in ("L", "RGB"):
        return 0
    rows = np.asarray(im).reshape(im.size[1], -1)
    if not (rows[-1] == 128).all():  # the common case, told from one row
        return 0
    grey = (rows == 128).all(axis=1)
    first_not_grey = np.flatnonzero(~grey)
    missing = len(grey) - (int(first_not_grey[-1]) + 1 if first_not_grey.size else 0)
    return missing if missing >= 8 else 0


def _unread_format(fp: BinaryIO) -> str:
    """Why an upload Pillow does not recognise is refused, naming the common formats of drawings and
    photos it cannot read (an iPhone's HEIC, SVG, PDF) from their first bytes."""
    try:
        fp.seek(0)
        head = fp.read(1024)
    except (OSError, ValueError):
        head = b""
    export = "export the drawing as PNG or JPEG"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
        return f"a HEIC/HEIF photo (an iPhone's default format), which is not read here: {export} (on an iPhone: " \
               "Settings > Camera > Formats > Most Compatible)"
    if head.startswith(b"%PDF"):
        return f"a PDF document, not an image: {export}"
    if b"<svg" in head.lower():
        return f"an SVG drawing (a vector format, not pixels): {export}"
    return "not an image format Pillow can read"


def _bomb_reason(e: Image.DecompressionBombError, max_pixels: int) -> str:
    """The reason the pixel check gives, for an image Pillow's own guard refused: its size is read
    from the guard's frame (``_decompression_bomb_check(size)``, whichever plugin called it), its
    pixel count from the message where that frame is not found."""
    size, tb = None, e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_decompression_bomb_check":
            size = tb.tb_frame.f_locals.get("size")
        tb = tb.tb_next
    pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if isinstance(size, tuple) and len(size) == 2:
        w, h = (max(1, int(n)) for n in size)
        what = f"{w}x{h} = {w * h} pixels"
        pixels = w * h
    else:
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found.group(1)) if found else pillow_limit + 1
        what = f"{pixels} pixels"
    limit = max_pixels if pixels > max_pixels else pillow_limit  # the product's, or Pillow's when set lower
    setting = "adapt.max_image_pixels" if limit == max_pixels else "Pillow's Image.MAX_IMAGE_PIXELS"
    return f"{what} exceeds the limit of {limit} ({setting}; possible decompression bomb)"


def _to_gray_or_rgb(im: Image.Image, name: str) -> np.ndarray:
    """Normalise any Pillow mode to 8-bit L or RGB, compositing transparency onto white."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return np.asarray(im, dtype=np.uint8).copy()
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_uint8(np.asarray(im), mode)
    if mode in ("LA", "La", "PA", "RGBA", "RGBa", "P"):
        # P may carry a transparent palette index; converting to RGBA turns it into alpha.
        grayscale = mode in ("LA", "La")
        rgba = im.convert("RGBA")
        # light strokes on transparency (a drawing for a dark theme) vanish on white: they go on black,
        # as a drawing in light strokes on a dark background, which ingestion inverts; three such
        # drawings were "blank" and "duplicate of" each other (a probe of 2026-12-07)
        paper = 0 if _light_ink_on_transparency(np.asarray(rgba)) else WHITE
        background = Image.new("RGBA", rgba.size, (paper, paper, paper, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
        return np.asarray(rgb.convert("L") if grayscale else rgb, dtype=np.uint8).copy()
    try:
        # CMYK, YCbCr, HSV...: Pillow knows the conversion to RGB.
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (ValueError, OSError) as e:
        raise ImageError(name, f"unsupported colour mode {mode!r} ({e})") from None


def _light_ink_on_transparency(rgba: np.ndarray) -> bool:
    """(H, W, 4) uint8: partly transparent, and what is drawn (its opaque pixels, by their alpha) light.
    Read from a copy of at most ~1,000,000 pixels: in floats, a 40-megapixel upload took 1.3 GB."""
    step = max(1, int(np.sqrt(rgba.shape[0] * rgba.shape[1] / 1e6)))
    rgba = rgba[::step, ::step]
    alpha = rgba[..., 3].astype(np.float64) / 255.0
    if alpha.min() > 0.5 or alpha.sum() == 0:
        return False
    luma = rgba[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float((luma * alpha).sum() / alpha.sum()) > 200


def _high_depth_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit integer and float grayscale to 0..255."""
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        # a float TIFF's missing pixels (NaN) made the whole image NaN-scaled, black, then "blank"
        # (a probe of 2026-12-07): they are taken as its lightest pixel, the paper
        finite = a[np.isfinite(a)]
        lightest, darkest = (finite.max(), finite.min()) if finite.size else (255.0, 0.0)
        a = np.nan_to_num(a, nan=lightest, posinf=lightest, neginf=darkest)
    if mode.startswith("I;16"):
        a = a / 257.0  # 65535 -> 255 exactly
    elif mode == "I":
        # Pillow opens 16-bit PNGs as mode I too; values above 255 mean a 16-bit range.
        if a.max(initial=0) > 255:
            a = a / 257.0
    elif mode == "F" and a.max(initial=0) <= 1.0:
        a = a * 255.0  # floats in [0, 1]
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def preprocess_array(img: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Bring an in-memory image to uint8 (size, size, channels): pad to square with white, Lanczos.

    Accepts bool (True is the white background, as in the Omniglot npz) or uint8 arrays of
    shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); alpha is composited onto white.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = np.asarray(img)
    if img.dtype == np.bool_:
        img = np.where(img, np.uint8(WHITE), np.uint8(0))
    elif img.dtype != np.uint8:
        raise ValueError(f"expected a bool or uint8 image array, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        pil = Image.fromarray(img, "L")
    elif img.ndim == 3 and img.shape[2] == 3:
        pil = Image.fromarray(img, "RGB")
    elif img.ndim == 3 and img.shape[2] == 4:
        pil = Image.fromarray(_to_gray_or_rgb(Image.fromarray(img, "RGBA"), "<array>"), "RGB")
    else:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 1|3|4), got {img.shape}")
    if pil.width == 0 or pil.height == 0:
        raise ValueError(f"image has no pixels: shape {img.shape}")

    pil = pil.convert("L" if channels == 1 else "RGB")  # RGB->L uses ITU-R 601 luma
    side = max(pil.size)
    if side > MAX_CANVAS_SIDE:  # box-averaged (thin strokes stay, lighter); images up to the bound are unchanged
        pil = pil.reduce(-(-side // MAX_CANVAS_SIDE))
        side = max(pil.size)
    if pil.width != pil.height:
        canvas = Image.new(pil.mode, (side, side), WHITE if channels == 1 else (WHITE,) * 3)
        canvas.paste(pil, ((side - pil.width) // 2, (side - pil.height) // 2))
        pil = canvas
    if side != size:
        pil = pil.resize((size, size), Image.Resampling.LANCZOS)
    out = np.asarray(pil, dtype=np.uint8)
    return out.reshape(size, size, channels).copy()


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    a = np.asarray(images_uint8)
    if a.dtype != np.uint8 or a.ndim != 4:
        raise ValueError(f"expected uint8 (N, H, W, C), got {a.dtype} {a.shape}")
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C); values outside the range are clamped."""
    if t.ndim != 4:
        raise ValueError(f"expected a (N, C, H, W) tensor, got shape {tuple(t.shape)}")
    x = ((t.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
