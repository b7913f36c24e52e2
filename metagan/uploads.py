"""Customer uploads: one folder per customer, validated file by file.

A bad file is rejected with a reason and the customer continues with the rest; a customer whose
uploads cannot make a task (too few or too many usable shots, unsafe id) gets an ``UploadError``
naming the customer, and nothing is written for them. Other customers are never affected.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterable

import numpy as np

READ_BUDGET_IMAGES = 25
"""A customer's uploads are decoded up to this many times ``adapt.max_image_pixels`` in all (a
billion pixels by default: twenty 12-megapixel phone photos fit four times over); the files after
are left out, said, so a folder of hundreds of huge pages cannot hold an ingestion for minutes.
Not a setting: the adapt section is part of every customer model's identity."""

# Ids become file names, registry model names and URL parts: keep them boring.
CUSTOMER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class UploadError(ValueError):
    """A customer's uploads cannot be used; the message names the customer and the reason."""

    def __init__(self, customer: str, reason: str, rejected: Iterable[tuple[str, str]] = ()):
        super().__init__(f"customer {customer!r}: {reason}")
        self.customer = customer
        self.reason = reason
        self.rejected = list(rejected)
        """Every file left out, with why (the reason names only the first few of each kind)."""

    def __reduce__(self):
        return (type(self), (self.customer, self.reason, self.rejected))


@dataclass
class CustomerUploads:
    customer_id: str
    images: np.ndarray
    """(K, H, W, C) uint8 in the dataset's format."""
    files: list[str]
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """(file name, reason) for every file that was not used."""
    converted: list[tuple[str, str]] = field(default_factory=list)
    """(file name, what was done) for every file used after a conversion (an inverted drawing, a photographed one whitened)."""

    @property
    def content_hash(self) -> str:
        """Changes exactly when the usable images change (so unchanged customers can be skipped)."""
        h = hashlib.sha256()
        for img in self.images:
            h.update(img.tobytes())
        return h.hexdigest()


def validate_customer_id(name: str, known: Collection[str] = (), batch: Iterable[str] = (),
                         claimed: Iterable[str] = ()) -> str:
    """``name`` when it can be a customer's id: safe as a file name, a registry name and a URL part
    and, given the ids already known (``known``: ingested or registered), those arriving with it
    (``batch``) and the spelling that holds its claim (``claimed``: an overlapping run's), not one
    of them in another case. Ids are case-sensitive (``Acme`` and ``acme`` are
    two customers), but on a case-insensitive file system (macOS, Windows, some mounts) the two
    would share their folders; an id already known with that very spelling is of course fine."""
    if not CUSTOMER_ID.fullmatch(name):
        raise UploadError(name, "unsafe customer id: use 1-64 ASCII letters (A-Z, a-z), digits, '_' or '-', "
                                 "starting with a letter or digit")
    if name in known:
        return name
    if (twin := _case_twin(name, known)) is not None:
        raise UploadError(name, f"its id differs only in case from the known customer {twin!r}: {_SHARED_FOLDERS}; "
                                f"if it is that customer, upload to {twin!r}, else choose another id")
    if (twin := _case_twin(name, batch)) is not None:
        raise UploadError(name, f"its id differs only in case from {twin!r}, uploaded in the same batch: "
                                f"{_SHARED_FOLDERS}; rename one of the two folders")
    if (twin := _case_twin(name, claimed)) is not None:
        raise UploadError(name, f"its id differs only in case from {twin!r}, which another ingestion claimed first "
                                f"(the fleet index holds it; a claim no shots were written under lapses after a day): "
                                f"{_SHARED_FOLDERS}; if it is that customer, upload to "
                                f"{twin!r}, else choose another id")
    return name


WINDOWS_DEVICE_NAMES = frozenset(["CON", "PRN", "AUX", "NUL", *(f"{d}{i}" for d in ("COM", "LPT") for i in range(10))])
"""Names Windows keeps for devices, in any case and with any extension (``con.txt``): no file or
folder there can bear them."""


def windows_device_name(name: str) -> bool:
    """Whether ``name`` is one Windows keeps for a device (``CON``, ``com1``, ``Nul.png``...)."""
    return name.split(".")[0].rstrip(" ").upper() in WINDOWS_DEVICE_NAMES


def check_id_for_ingestion(name: str) -> str:
    """``name`` when a customer can be ingested under it: a valid id (:func:`validate_customer_id`)
    that is also no Windows device name, which the id rules, safe as file names on Windows too,
    missed (a probe of 2026-12-07 ingested ``CON``). Only ingestion asks: a model registered under
    such a name before stays served."""
    validate_customer_id(name)
    if windows_device_name(name):
        raise UploadError(name, f"unsafe customer id: {name!r} is a device name on Windows (CON, PRN, AUX, NUL, "
                                "COM0-COM9, LPT0-LPT9, in any case), which no file or folder there can bear: "
                                "choose another id")
    return name


MISNAMED_FOLDER = "is a folder named as no customer can be"
"""How the hour says a folder :func:`id_problem` refuses (``my customer``, ``CON``), once."""


def id_problem(name: str) -> str | None:
    """Why no customer can be ingested under ``name`` (:func:`check_id_for_ingestion`'s reason),
    or None."""
    try:
        check_id_for_ingestion(name)
    except UploadError as e:
        return e.reason
    return None


_SHARED_FOLDERS = ("ids are case-sensitive, but on a case-insensitive file system (macOS, Windows, some mounts) the "
                   "two would share folders and mix or overwrite each other's shots and models")


def _case_twin(name: str, others: Iterable[str]) -> str | None:
    """The least (alphabetically) of ``others`` that differs from ``name`` only in case, if any. Unsafe ids
    are no twins: ``str.casefold`` folds some non-ASCII letters into ASCII ones ('ß' into 'ss')."""
    folded = name.casefold()
    return min((o for o in others if o != name and o.casefold() == folded and CUSTOMER_ID.fullmatch(o)), default=None)


SYSTEM_ENTRIES = frozenset(n.casefold() for n in (
    "__MACOSX", "lost+found", "@eaDir", "System Volume Information", "$RECYCLE.BIN", "RECYCLER", "#recycle",
    "#snapshot", "Thumbs.db", "ehthumbs.db", "desktop.ini"))
"""What operating systems, archivers and NAS boxes leave in folders (a macOS zip's ``__MACOSX``, a
volume's ``lost+found``, Synology's ``@eaDir``, Windows' thumbnails and ``desktop.ini``): never a
customer's folder nor a customer's upload. Seen as customer folders with unsafe ids, they made every
run "partial" (exit 1) and the hour ingest them again each hour (a probe of 2026-12-07)."""


def ignored_entry(name: str) -> bool:
    """Whether an entry of the uploads folder or of a customer's folder is passed over unseen:
    hidden (a leading dot: ``.DS_Store``, ``._a.png``) or :data:`SYSTEM_ENTRIES`' (any case)."""
    return name.startswith(".") or name.casefold() in SYSTEM_ENTRIES


def discover_customers(root: str | Path) -> list[Path]:
    """Customer folders under ``root`` (hidden and system entries ignored), sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"customers folder {root} does not exist")
    return upload_entries(root)[0]


def upload_entries(root: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """One look at ``root``: its customer folders, and the entries that stand where customer folders
    would but are none (a file, a link to nothing), with :func:`folder_problem`'s why; hidden entries
    and system entries (:func:`ignored_entry`) ignored, each list sorted. A folder costs one ``stat``, as it
    did before the others were said."""
    folders, others = [], []
    for p in sorted(p for p in Path(root).iterdir() if not ignored_entry(p.name)):
        why = folder_problem(p)
        if why is None:
            folders.append(p)
        else:
            others.append((p, why))
    return folders, others


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a customer's upload folder (it does not exist, is a file, a link to
    nothing...), said after its path; None for a folder (a link to one is refused when it is read)."""
    import os

    path = Path(path)
    if path.is_dir():
        return None
    if path.is_symlink():
        if path.exists():
            return "is a symbolic link to a file, not a folder"
        # a loop (a link to itself, two links to each other) is no "link to nothing": the target is there
        # the target is said escaped: a line break in it forged a line of `metagan ingest`'s output
        target = shown_name(os.readlink(path))
        return f"is a symbolic link that leads back to itself ({target}): a loop" if _loops(path) else \
            f"is a symbolic link to nothing ({target})"
    if not path.exists():
        return "does not exist"
    return "is a file, not a folder" if path.is_file() else "is not a folder"


def _loops(path: Path) -> bool:
    import errno
    import os

    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def not_customer_folders(root: str | Path) -> list[tuple[Path, str]]:
    """The entries of ``root`` that stand where customer folders would but are none (a file, a
    link to nothing), with :func:`folder_problem`'s why; hidden ones ignored, as
    :func:`discover_customers` does. A full scan reports them instead of passing them over."""
    return upload_entries(root)[1]


def folder_signature(folder: str | Path) -> str:
    """What a customer folder holds, cheaply: a hash of its entries' names, sizes and modification
    times (hidden ones ignored), read from the directory and one ``stat`` per file, no image
    opened. Uploads that change change it; the hourly run ingests only the folders whose
    signature differs from the one recorded at their last ingestion."""
    import os

    h = hashlib.sha256()
    try:
        with os.scandir(folder) as entries:
            found = sorted((e.name, e.stat(follow_symlinks=False)) for e in entries if not ignored_entry(e.name))
    except OSError as e:  # gone or unreadable: a signature no ingestion recorded, so it is looked at
        return f"unreadable:{e.errno}"
    for name, st in found:  # a name that is not UTF-8 (its bytes kept as surrogates) hashes as its bytes
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def load_customer_uploads(
    folder: str | Path, size: int, channels: int, min_shots: int = 1, max_shots: int = 20,
    max_pixels: int = 40_000_000, screen: Callable[[np.ndarray], list] | None = None,
) -> CustomerUploads:
    """The usable shots of one customer folder. ``screen``: the domain check
    (:class:`metagan.domain.DomainScreen`), judging the decoded images as a batch; the files it
    refuses are rejected with its reason, the ones it converts are used converted."""
    # here, not at the top: ids are validated on the serving path too (`metagan generate`), which
    # must not pay for the data layer's torch import
    from metagan.data.images import ImageError, preprocess_array, read_image
    from metagan.upload_conversions import read_from_the_page

    folder = Path(folder)
    customer = check_id_for_ingestion(folder.name)
    if folder.is_symlink():
        # a link could make one customer's model out of another customer's (or any) files
        raise UploadError(customer, "the customer folder is a symbolic link; upload the files themselves")
    files = sorted(p for p in folder.iterdir() if not ignored_entry(p.name)) if folder.is_dir() else []
    images, used, rejected, converted, seen, uploaded_at = [], [], [], [], {}, {}
    # decoded (and what was read of the page, if anything), not yet judged by the screen, with the digests of the file's
    # pixels and of their inverse
    pending: list[tuple[str, np.ndarray, str, tuple[str, str]]] = []

    def drop_for(twin: str, name: str) -> None:
        """``twin``, kept so far, is a later copy of ``name``: it leaves the shots."""
        i = used.index(twin)
        del images[i], used[i]
        converted[:] = [c for c in converted if c[0] != twin]
        rejected.append((twin, f"duplicate of {name}"))
        for k in [k for k, v in seen.items() if v == twin]:
            seen[k] = name

    def judge() -> None:
        """The screen's verdicts on the pending images (one per image: judged in chunks, the same);
        only the images it keeps count toward ``max_shots``."""
        verdicts = screen(np.stack([img for _, img, _, _ in pending])) if screen is not None and pending else None
        for i, (name, img, read, (digest, inverse)) in enumerate(pending):
            verdict = verdicts[i] if verdicts is not None else None
            if verdict is not None and not verdict.ok:
                rejected.append((name, verdict.refusal))
                continue
            kept = img if verdict is None else verdict.image
            # told once judged, so blank pages are refused as blank, not as duplicates of the first; and a
            # file whose pixels are another's inverse, a drawing and its dark-mode copy, is one drawing
            # (a probe of 2026-12-07: they were two shots)
            kept_digest = _digest(kept)
            twin = next((seen[k] for k in (digest, inverse, kept_digest) if k in seen), None)
            if twin is not None:
                # the file uploaded first is the shot, a later copy the duplicate, whatever their names: a
                # drawing uploaded again under a name sorting first changed the shots' order, so their
                # identity, and a new version was adapted from the same drawings (a probe of 2026-12-07)
                if uploaded_at[name] >= uploaded_at[twin]:
                    rejected.append((name, f"duplicate of {twin}"))
                    continue
                drop_for(twin, name)
            seen.setdefault(digest, name)
            seen.setdefault(kept_digest, name)
            images.append(kept)
            used.append(name)
            done = " and ".join(c for c in (read, verdict.converted if verdict is not None else "") if c)
            if done:
                converted.append((name, done))
        pending.clear()
        if len(images) > max_shots:
            raise UploadError(customer, f"more than {max_shots} usable images, at most {max_shots} allowed")

    budget, read_pixels = READ_BUDGET_IMAGES * max_pixels, 0
    for path in files:
        if read_pixels >= budget:
            # 200 near-blank 40-megapixel pages held an ingestion 54 s (a probe of 2026-12-07)
            rejected.append((shown_name(path.name), f"not read: this customer's uploads before it held "
                                                    f"{_pixels(read_pixels)}, the most read for one "
                                                    f"customer ({READ_BUDGET_IMAGES} x adapt.max_image_pixels); "
                                                    "upload at most the drawings to learn from"))
            continue
        if not _is_utf8(path.name):  # it could not be named in a report, a log or a registry tag
            rejected.append((shown_name(path.name), "the file name is not valid UTF-8: rename the file"))
            continue
        if _breaks_lines(path.name):  # a line break in a name split the one-line error and could forge lines
            rejected.append((shown_name(path.name), "the file name holds control characters (a line break, a tab...): "
                                                    "rename the file"))
            continue
        if path.is_symlink():
            rejected.append((path.name, "symbolic link: only regular files are read"))
            continue
        if not path.is_file():
            rejected.append((path.name, "not a regular file"))
            continue
        try:
            uploaded = path.stat().st_mtime_ns
            decoded = read_image(path, max_pixels, min_upload_side(size))
            read_pixels += decoded.shape[0] * decoded.shape[1]
            raw, read, refusal = read_from_the_page(decoded, size)
            if refusal:
                rejected.append((path.name, refusal))
                continue
            img = preprocess_array(raw, size, channels)
        except ImageError as e:
            rejected.append((path.name, e.reason))
            continue
        except OSError as e:  # the file system's fault, not the file's: this file is skipped, not the customer
            rejected.append((path.name, f"cannot be read ({e.strerror or e})"))
            continue
        pending.append((path.name, img, read, (_digest(raw), _digest(255 - raw))))
        uploaded_at[path.name] = uploaded
        # past max_shots the screen judges what is decoded before decoding on, and decoding stops once
        # the usable ones are too many: 20 drawings and a photo were "more than 20 usable images"
        if len(images) + len(pending) > max_shots:
            judge()
    judge()
    if len(images) < min_shots:
        if not files:
            raise UploadError(customer, f"0 usable image(s), at least {min_shots} needed: the folder holds no file "
                                        "(hidden and system files are not read)")
        detail = rejection_summary(rejected)
        raise UploadError(customer, f"{len(images)} usable image(s), at least {min_shots} needed"
                          + (f" (rejected: {detail})" if detail else ""), rejected)
    return CustomerUploads(customer, np.stack(images), used, rejected, converted)


def _pixels(n: int) -> str:
    return f"{n / 1e6:,.0f} megapixels" if n >= 10**7 else f"{n:,} pixels"


def _digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def min_upload_side(size: int) -> int:
    """The shortest longer side an upload may have when served at ``size`` pixels: a quarter of it
    (16 at 64). Smaller drawings are blown up into blurs: at 8 and 12 pixels the domain check
    refused about half of the Omniglot drawings shrunk to them as "a photograph, texture or
    gradient", a reason that misled, and let the other half be served blurred; at 16 it kept 79 of 80."""
    return max(1, size // 4)


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # Python keeps a file name's undecodable bytes as lone surrogates
        return False
    return True


_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Unicode's direction overrides and isolates: printed raw, they make a name read as another
(``a\u202egnp.exe`` shows as ``aexe.png``; a probe of 2026-12-07)."""


def _breaks_lines(name: str) -> bool:
    """Whether a name holds control characters (line breaks, tabs, terminal escapes), Unicode's
    line and paragraph separators or direction overrides; other invisible characters (an emoji's
    joiner) are fine."""
    import unicodedata

    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI_CONTROLS for c in name)


def shown_name(name: str) -> str:
    """A file name (or a folder's, a link's target) as text that can be printed and stored on one
    line: undecodable bytes as ``\\xff``, control characters and line separators as ``\\n``,
    ``\\x1b``, ``\\u2028``..."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(repr(c)[1:-1] if _breaks_lines(c) else c for c in text)


NAMES_PER_REASON = 5
"""The files a summary names for one reason; the rest are counted."""
REASONS_SHOWN = 10
"""The reasons a summary says; the files of the others are counted."""


def rejection_summary(rejected: list[tuple[str, str]]) -> str:
    """``a.png, b.png: reason; c.png: other reason``: files with the same reason named together,
    so five photos read as one sentence the customer can act on. A line stays readable whatever
    the folder holds: the first :data:`NAMES_PER_REASON` files of a reason are named and the rest
    counted (``... and 4,995 more``), and past :data:`REASONS_SHOWN` reasons their files are
    counted too (5,000 bad files made a 60 KB line, probe of 2026-12-07); every file and reason
    stays in the result (``report.json``, ``UploadError.rejected``, the pipeline's JSON)."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in rejected:
        by_reason.setdefault(reason, []).append(name)
    said = []
    for reason, names in list(by_reason.items())[:REASONS_SHOWN]:
        more = len(names) - NAMES_PER_REASON
        said.append(", ".join(names[:NAMES_PER_REASON]) + (f" and {more:,} more" if more > 0 else "") + f": {reason}")
    others = list(by_reason.values())[REASONS_SHOWN:]
    if others:
        said.append(f"and {sum(map(len, others)):,} more file(s) for {len(others):,} other reason(s)")
    return "; ".join(said)
