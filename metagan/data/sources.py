"""Readers that turn a raw dataset (Omniglot npz or zip, a folder tree) into classes of images.

Every reader yields :class:`ClassImages` one class at a time, so a large dataset is never held
in memory whole; :func:`metagan.data.shards.pack_shards` consumes them. Images stay in their
raw form (in-memory arrays, file paths, or encoded bytes) until :meth:`ClassImages.load`
decodes and preprocesses them, which keeps all decoding in one place (``images.py``).
A source that is not what it should be raises :class:`~metagan.errors.BadInput` (a ValueError).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

import numpy as np

from .images import DEFAULT_MAX_PIXELS, ImageError, load_image, load_image_bytes, preprocess_array
from metagan.errors import BadInput
from metagan.files import save_npz, write_text

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

# Files that operating systems drop into folders; never images, never worth an error.
_JUNK_FILES = {"thumbs.db", "desktop.ini"}
# A zip member larger than this is not a sane training image; refuse before reading it into memory.
_MAX_ZIP_MEMBER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class EncodedImage:
    """Encoded image bytes (e.g. a PNG read from a zip), with a name for error messages."""

    name: str
    data: bytes = field(repr=False)


ImageItem = Union[np.ndarray, Path, EncodedImage]


@dataclass
class ClassImages:
    """One class (e.g. an Omniglot character) of a task dataset.

    ``images`` holds raw items: bool/uint8 arrays (H, W) or (H, W, C), file paths, or
    :class:`EncodedImage`. ``on_error`` says what :meth:`load` does with a file that fails to
    decode: ``"raise"`` an :class:`ImageError` naming it, or ``"skip"`` it with a warning.
    """

    name: str
    group: str
    images: list[ImageItem]
    on_error: OnError = "raise"

    def load(self, size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Decode and preprocess every image: uint8 (n, size, size, channels)."""
        out = []
        for item in self.images:
            try:
                out.append(_load_item(item, size, channels, max_pixels))
            except ImageError as e:
                if self.on_error == "raise":
                    raise
                log.warning("skipping image of class %r: %s", self.name, e)
        if not out:
            return np.zeros((0, size, size, channels), np.uint8)
        return np.stack(out)


def _load_item(item: ImageItem, size: int, channels: int, max_pixels: int) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return preprocess_array(item, size, channels)
    if isinstance(item, EncodedImage):
        return load_image_bytes(item.data, item.name, size, channels, max_pixels)
    return load_image(item, size, channels, max_pixels)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


# ----------------------------------------------------------------------------------------------
# Omniglot npz: images bool (n_chars, n_drawers, H, W), True = white; labels (n_chars, n_drawers).


def read_omniglot_npz(
    path: str | Path, alphabets_json: str | Path | None = None
) -> Iterator[ClassImages]:
    """Yield one class per character of an Omniglot npz (``images`` bool, ``labels``).

    ``alphabets.json`` (next to the npz unless given) maps each alphabet to the inclusive
    [first, last] range of character indices; a class is then named
    ``"<alphabet>/characterNN"`` in the alphabet ``group``. Without it, every character is its
    own group. The images are streamed one character at a time from the npz, so reading the
    first few classes of a large file is cheap.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Omniglot npz not found: {path}")
    if alphabets_json is None:
        candidate = path.with_name("alphabets.json")
        alphabets = _read_alphabets(candidate) if candidate.is_file() else None
    else:
        alphabets = _read_alphabets(Path(alphabets_json))

    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files or "labels" not in npz.files:
                raise BadInput(f"{path}: expected arrays 'images' and 'labels', found {npz.files}")
            labels = npz["labels"]
    except BadInput:
        raise
    except (ValueError, EOFError, zipfile.BadZipFile):  # numpy's words for "no .npz" (a text file: "pickled data")
        raise BadInput(f"{path} is not an Omniglot npz (a numpy .npz of arrays 'images' and 'labels')") from None
    names = _character_names(path, labels, alphabets)
    # Checks above run at call time; the generator below reads images lazily.
    return _iter_npz_classes(path, names)


def _iter_npz_classes(path: Path, names: list[tuple[str, str]]) -> Iterator[ClassImages]:
    n_rows = 0
    with zipfile.ZipFile(path) as zf:
        for row in _iter_npy_rows(zf, "images.npy", path):
            if row.ndim != 3 or n_rows >= len(names):
                raise BadInput(
                    f"{path}: images must be (n_chars, n_drawers, H, W) with one row per "
                    f"labels row ({len(names)}); got rows of shape {row.shape}, row {n_rows}"
                )
            name, group = names[n_rows]
            n_rows += 1
            yield ClassImages(name=name, group=group, images=list(row))
    if n_rows != len(names):
        raise BadInput(f"{path}: {n_rows} image rows but {len(names)} label rows")


def _read_alphabets(path: Path) -> dict[str, tuple[int, int]]:
    if not path.is_file():
        raise FileNotFoundError(f"alphabets file not found: {path}")
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a mapping alphabet -> [first, last]")
    out = {}
    for name, rng in raw.items():
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) for v in rng)):
            raise BadInput(f"{path}: alphabet {name!r} must map to [first, last], got {rng!r}")
        if rng[0] > rng[1] or rng[0] < 0:
            raise BadInput(f"{path}: alphabet {name!r} has an invalid range {rng}")
        out[name] = (rng[0], rng[1])
    return out


def _character_names(
    path: Path, labels: np.ndarray, alphabets: dict[str, tuple[int, int]] | None
) -> list[tuple[str, str]]:
    """(class name, group) for every row of ``labels``."""
    if labels.ndim != 2:
        raise BadInput(f"{path}: labels must be (n_chars, n_drawers), got shape {labels.shape}")
    char_ids = labels[:, 0].astype(np.int64)
    if not (labels == char_ids[:, None]).all():
        raise BadInput(f"{path}: each row of labels must hold one character index")
    owner: dict[int, tuple[str, int]] = {}
    for alphabet, (first, last) in (alphabets or {}).items():
        for c in range(first, last + 1):
            if c in owner:
                raise BadInput(f"alphabets overlap: character {c} is in {owner[c][0]!r} and {alphabet!r}")
            owner[c] = (alphabet, c - first)
    names = []
    for c in char_ids.tolist():
        if alphabets is None:
            name = f"character{c + 1:04d}"
            names.append((name, name))
        elif c not in owner:
            raise BadInput(f"{path}: character index {c} is not covered by any alphabet in alphabets.json")
        else:
            alphabet, k = owner[c]
            names.append((f"{alphabet}/character{k + 1:02d}", alphabet))
    return names


def _iter_npy_rows(zf: zipfile.ZipFile, member: str, path: Path) -> Iterator[np.ndarray]:
    """Yield ``arr[i]`` for each i of an .npy inside a zip, reading one row at a time."""
    try:
        fp = zf.open(member)
    except KeyError:
        raise BadInput(f"{path}: no {member} inside the npz") from None
    with fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        if dtype.hasobject:
            raise BadInput(f"{path}: {member} holds Python objects; refusing to unpickle")
        if fortran or len(shape) < 2:
            # Rare layouts: fall back to reading the whole array.
            with zf.open(member) as again:
                arr = np.lib.format.read_array(again, allow_pickle=False)
            yield from arr
            return
        row_shape = shape[1:]
        row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        for i in range(shape[0]):
            buf = fp.read(row_bytes)
            if len(buf) != row_bytes:
                raise BadInput(f"{path}: {member} is truncated at row {i}")
            yield np.frombuffer(buf, dtype=dtype).reshape(row_shape)


def write_omniglot_subset(
    src_npz: str | Path, alphabets: Sequence[str], dest_npz: str | Path
) -> Path:
    """Write the chosen alphabets of an Omniglot npz as a same-format npz plus ``alphabets.json``.

    Characters are renumbered from 0 in the order the alphabets are given; ``alphabets.json``
    is written next to ``dest_npz`` with the new ranges. Returns the npz path.
    """
    src_npz, dest_npz = Path(src_npz), Path(dest_npz)
    ranges = _read_alphabets(src_npz.with_name("alphabets.json"))
    missing = [a for a in alphabets if a not in ranges]
    if missing:
        raise BadInput(f"unknown alphabet(s) {missing}; {src_npz} has {sorted(ranges)}")
    if len(set(alphabets)) != len(alphabets):
        raise BadInput(f"alphabets listed twice: {list(alphabets)}")

    with np.load(src_npz, allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"]
    row_of = {int(c): i for i, c in enumerate(labels[:, 0])}
    rows, new_ranges = [], {}
    for a in alphabets:
        first, last = ranges[a]
        new_ranges[a] = [len(rows), len(rows) + last - first]
        rows.extend(row_of[c] for c in range(first, last + 1))
    sub = images[rows]
    new_labels = np.repeat(np.arange(len(rows), dtype=labels.dtype)[:, None], labels.shape[1], axis=1)

    dest_npz.parent.mkdir(parents=True, exist_ok=True)
    save_npz(dest_npz, images=sub, labels=new_labels)
    write_text(dest_npz.with_name("alphabets.json"), json.dumps(new_ranges, indent=1) + "\n")
    return dest_npz


# ----------------------------------------------------------------------------------------------
# Omniglot's official zips: images_background/<Alphabet>/<characterNN>/<file>.png


def read_omniglot_zip(path: str | Path, on_error: OnError = "raise") -> Iterator[ClassImages]:
    """Yield one class per ``<Alphabet>/<characterNN>`` folder of an official Omniglot zip.

    The top folder (``images_background``, ``images_evaluation``) is dropped from the names;
    group is the alphabet. PNG bytes are read straight from the zip, never extracted to disk.
    """
    _check_on_error(on_error)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Omniglot zip not found: {path}")
    if not zipfile.is_zipfile(path):
        raise BadInput(f"{path}: not a zip file")
    return _iter_zip_classes(path, on_error)


def _iter_zip_classes(path: Path, on_error: OnError) -> Iterator[ClassImages]:
    with zipfile.ZipFile(path) as zf:
        by_class: dict[tuple[str, str], list[zipfile.ZipInfo]] = {}
        for info in zf.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            if len(parts) < 3 or parts[-1].lower() in _JUNK_FILES:
                continue  # e.g. a README at the top of the archive
            by_class.setdefault((parts[-3], parts[-2]), []).append(info)
        if not by_class:
            raise BadInput(f"{path}: no <Alphabet>/<character>/<image> entries found")
        for (alphabet, character) in sorted(by_class):
            infos = sorted(by_class[(alphabet, character)], key=lambda i: i.filename)
            items: list[ImageItem] = []
            for info in infos:
                name = f"{path}:{info.filename}"
                if info.file_size > _MAX_ZIP_MEMBER_BYTES:
                    err = ImageError(name, f"{info.file_size} bytes uncompressed is too large for an image")
                    if on_error == "raise":
                        raise err
                    log.warning("skipping %s", err)
                    continue
                items.append(EncodedImage(name, zf.read(info)))
            yield ClassImages(f"{alphabet}/{character}", alphabet, items, on_error)


# ----------------------------------------------------------------------------------------------
# Folder trees: <root>/<class>/<files> or <root>/<group>/<class>/<files>


def read_folder_tree(root: str | Path, on_error: OnError = "raise") -> Iterator[ClassImages]:
    """Yield one class per folder of ``<root>/<class>/<images>``.

    A top-level folder that contains only folders is a group: ``<root>/<group>/<class>/<images>``
    gives class ``"<group>/<class>"`` in ``group``; otherwise group is the class name. Hidden
    files and folders are skipped. A file that fails to decode raises :class:`ImageError` when
    the images are loaded, or is skipped with a warning if ``on_error="skip"``.
    """
    _check_on_error(on_error)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    return _iter_folder_classes(root, on_error)


def _iter_folder_classes(root: Path, on_error: OnError) -> Iterator[ClassImages]:
    top = _visible_children(root)
    stray = [p.name for p in top if not p.is_dir()]
    if stray:
        log.warning("ignoring %d file(s) at the top of %s (images belong in class folders): %s",
                    len(stray), root, stray[:5])
    found = False
    for folder in (p for p in top if p.is_dir()):
        children = _visible_children(folder)
        if children and all(c.is_dir() for c in children):
            for sub in children:
                files = _image_files(sub)
                if files:
                    found = True
                    yield ClassImages(f"{folder.name}/{sub.name}", folder.name, files, on_error)
        else:
            files = _image_files(folder)
            if files:
                found = True
                yield ClassImages(folder.name, folder.name, files, on_error)
    if not found:
        raise BadInput(f"{root}: no class folders with images (expected <root>/<class>/<images>)")


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    children = _visible_children(folder)
    nested = [p.name for p in children if p.is_dir()]
    if nested:
        log.warning("ignoring sub-folders of class folder %s: %s", folder, nested[:5])
    return [p for p in children if p.is_file() and p.name.lower() not in _JUNK_FILES]


# ----------------------------------------------------------------------------------------------


def read_source(path: str | Path, on_error: OnError = "raise") -> Iterator[ClassImages]:
    """Read a task dataset from an Omniglot ``.npz``, an Omniglot ``.zip`` or a folder tree."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset source not found: {path}")
    if path.is_dir():
        return read_folder_tree(path, on_error)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_omniglot_npz(path)
    if suffix == ".zip":
        return read_omniglot_zip(path, on_error)
    raise BadInput(
        f"{path}: unsupported dataset source; expected an Omniglot .npz, an Omniglot .zip "
        "or a folder of class sub-folders"
    )
