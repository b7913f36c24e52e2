"""Ingested customer data: each customer's validated shots packed into one small npz.

``data/customers/<id>/shots.npz`` holds the shots already in the dataset's format (so adaptation
never decodes untrusted files again) plus the names of the files used; ``report.json`` beside it
lists the rejected files with reasons. The folder is versioned with DVC together with the tasks.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metagan.files import save_npz, write_json
from metagan.uploads import CustomerUploads, UploadError, folder_signature, load_customer_uploads, validate_customer_id

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    customer_id: str
    ok: bool
    shots: int = 0
    rejected: list[tuple[str, str]] | None = None
    error: str = ""
    content_hash: str = ""
    uploads: CustomerUploads | None = None
    """The shots as ingested, for this run's adaptation: never read back from the shared folder,
    which an overlapping run may have rewritten since."""
    signature: str = ""
    """The upload folder's :func:`~metagan.uploads.folder_signature` before it was read (the hourly
    run ingests it again only once that changes)."""


def ingest_customer(folder: str | Path, dest_root: str | Path, size: int, channels: int, min_shots: int,
                    max_shots: int, max_pixels: int, screen=None) -> IngestResult:
    """Validate one customer's uploads and pack the usable shots; never raises for bad uploads, nor
    for a file-system fault (a folder it cannot read or write): either fails this customer alone,
    with its reason. ``screen``: the domain check (:func:`metagan.domain.upload_screen`)."""
    folder = Path(folder)
    # before reading: a file that changes while it is read changes the signature again
    signature = folder_signature(folder)
    try:
        up = load_customer_uploads(folder, size, channels, min_shots, max_shots, max_pixels, screen)
    except UploadError as e:
        unsafe = e.reason.startswith("unsafe customer id")  # never recorded: the id is not one
        if e.rejected:  # the error names a few of each kind: every one, for -v and the Prefect UI
            log.info("customer %r: every upload left out: %s", folder.name, e.rejected)
        return IngestResult(folder.name, ok=False, rejected=e.rejected or None, error=str(e),
                            signature="" if unsafe else signature)
    except OSError as e:
        return IngestResult(folder.name, ok=False, error=f"customer {folder.name!r}: cannot read {folder}: "
                                                        f"{e.strerror or e}")
    except Exception as e:  # noqa: BLE001 (a bug met by one customer's uploads fails that customer alone)
        log.info("customer %r: ingestion failed", folder.name, exc_info=True)  # its traceback, for -v
        return IngestResult(folder.name, ok=False, error=f"customer {folder.name!r}: ingestion failed "
                                                        f"({type(e).__name__}: {e}); the others went on")
    dest = Path(dest_root) / up.customer_id
    try:
        dest.mkdir(parents=True, exist_ok=True)
        # deterministic bytes (fixed zip timestamps): unchanged uploads leave the DVC hash unchanged
        save_npz(dest / "shots.npz", images=up.images, files=np.array(up.files))
        report = {"customer_id": up.customer_id, "files": up.files, "rejected": up.rejected,
                  "content_hash": up.content_hash} | ({"converted": up.converted} if up.converted else {})
        write_json(dest / "report.json", report)
    except OSError as e:  # atomic writes: the customer's previous shots, if any, are intact
        return IngestResult(up.customer_id, ok=False, error=f"customer {up.customer_id!r}: cannot write "
                                                            f"{e.filename or dest}: {e.strerror or e}")
    return IngestResult(up.customer_id, True, len(up.images), up.rejected, content_hash=up.content_hash, uploads=up,
                        signature=signature)


def load_ingested(dest_root: str | Path, customer_id: str) -> CustomerUploads:
    customer_id = validate_customer_id(customer_id)
    path = Path(dest_root) / customer_id / "shots.npz"
    if not path.exists():
        raise UploadError(customer_id, f"not ingested (no {path})")
    try:
        with np.load(path, allow_pickle=False) as npz:  # never unpickle customer-derived data
            return CustomerUploads(customer_id, npz["images"], [str(f) for f in npz["files"]])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        if "Object arrays cannot be loaded" in str(e):  # numpy's words for an archive of pickles
            raise UploadError(customer_id, f"its ingested shots {path} hold pickled Python objects: refused, "
                              "never unpickled; ingest its uploads again") from None
        # numpy calls any other bytes it cannot read "pickled data": a damaged file, not a pickle
        raise UploadError(customer_id, f"its ingested shots {path} are damaged ({type(e).__name__}); "
                          "restore data/ with `dvc checkout`, or ingest its uploads again") from None


def ingested_customers(dest_root: str | Path) -> list[str]:
    root = Path(dest_root)
    return sorted(p.name for p in root.iterdir() if (p / "shots.npz").exists()) if root.is_dir() else []
