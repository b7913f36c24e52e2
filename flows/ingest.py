"""``ingest``: task datasets and customer uploads -> validate -> pack -> ``dvc add`` -> push."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import FANOUT_WORKERS, data_target, dvc_root
from metagan import versioning
from metagan.lifecycle import fleet
from metagan.config import Params
from metagan.customers import IngestResult, ingest_customer
from metagan.domain import upload_screen
from metagan.known_customers import case_twins, release_unwritten
from metagan.task_data import prepare_task_dataset
from metagan.uploads import (CUSTOMER_ID, MISNAMED_FOLDER, CustomerUploads, discover_customers, folder_problem,
                             folder_signature, not_customer_folders, shown_name)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ingestion:
    data_version: str
    task_classes: int
    customers: dict[str, IngestResult] = field(default_factory=dict)

    @property
    def accepted(self) -> list[CustomerUploads]:
        """The usable shots of each accepted customer, as this run ingested them."""
        return [r.uploads for r in self.customers.values() if r.ok and r.uploads is not None]

    @property
    def rejected(self) -> dict[str, str]:
        return {cid: r.error for cid, r in self.customers.items() if not r.ok}

    @property
    def left_out(self) -> dict[str, list[tuple[str, str]]]:
        """The uploads left out of each accepted customer, with why (file, reason): every command
        that serves them says which."""
        return {cid: list(r.rejected) for cid, r in self.customers.items() if r.ok and r.rejected}

    @property
    def converted(self) -> dict[str, list[tuple[str, str]]]:
        """The uploads of each accepted customer used converted, with what was done (file, what):
        inverted drawings, photographed ones whitened. Every command that serves them says which."""
        return {cid: list(r.uploads.converted) for cid, r in self.customers.items()
                if r.ok and r.uploads is not None and r.uploads.converted}

    @property
    def refused_files(self) -> dict[str, list[tuple[str, str]]]:
        """Every upload of each rejected customer that was not usable, with why: its error names
        only the first few of each kind."""
        return {cid: list(r.rejected) for cid, r in self.customers.items() if not r.ok and r.rejected}


@task
def pack_tasks(params: Params, source: str | None) -> int:
    """Pack the task dataset into shards (no-op when the source and preprocessing are unchanged)."""
    return prepare_task_dataset(params, source=source).num_classes


@task
def ingest_one(folder: Path, params: Params) -> IngestResult:
    """Validate one customer's uploads (the domain check included) and pack the usable shots."""
    a = params.adapt
    return ingest_customer(folder, params.resolve(params.paths.ingested_customers), params.data.image_size,
                           params.data.channels, a.min_shots, a.max_shots, a.max_image_pixels, upload_screen(params))


@task
def record_ingestion(results: list[IngestResult]) -> None:
    """The fleet index learns what each folder held (its signature and shots): the hourly run plans from it."""
    fleet.record_ingestion(results)


def no_folder(path: Path, ingested_root: str | Path | None = None) -> IngestResult:
    """The result for a customer whose upload folder is not there: named to ingest, or an entry
    of a full scan that is none (a file, a link to nothing). Named, and known to the project by
    nothing (``ingested_root``: where its shots would be), it is an unknown customer, said as every
    command says it (:mod:`metagan.known_customers`)."""
    if ingested_root is not None and not os.path.lexists(path):
        from metagan.known_customers import unknown_among, unknown_customer_said

        if unknown_among([path.name], ingested_root, path.parent):
            return IngestResult(path.name, ok=False, error=unknown_customer_said(path.name, ingested_root, path.parent))
    why = folder_problem(path) or "is not a folder"
    # an entry that is there (a file, a link to nothing) is recorded as it is: the hour says it again
    # only once it changes (its folder made), not every hour
    signature = folder_signature(path) if os.path.lexists(path) and CUSTOMER_ID.fullmatch(path.name) else ""
    return IngestResult(path.name, ok=False, error=f"customer {path.name!r}: its upload folder {path} {why}",
                        signature=signature)


def customer_folders(customers_dir: str | Path, folders: list[str] | None = None,
                     ingested_root: str | Path | None = None) -> tuple[list[Path], list[IngestResult]]:
    """The customer folders of ``customers_dir`` to ingest (only ``folders``, when given), and the
    rejections of the customers that have none: a folder named that is not there (a typo, a file,
    gone since), or, in a full scan, an entry that is no folder (a file, a link to nothing). Each
    fails alone, aloud: an upload service believed those uploads ingested (exit 0 before), and a
    full scan passed such an entry over without a word (probes of 2026-12-06). Given
    ``ingested_root``, a new id that differs only in case from a known customer's, from another
    folder's of the batch or from the id an overlapping run claimed is refused too, its folder left
    unread; the other new ids are claimed in the fleet index (:func:`case_twins`)."""
    found, rejected = _folders(customers_dir, folders, ingested_root)
    if ingested_root is None:
        return found, rejected
    twins = case_twins([f.name for f in found], ingested_root)
    # no signature recorded: the index learns no such id, and the next run looks again
    return [f for f in found if f.name not in twins], rejected + [IngestResult(c, ok=False, error=str(e))
                                                                 for c, e in twins.items()]


def _folders(customers_dir: str | Path, folders: list[str] | None,
             ingested_root: str | Path | None) -> tuple[list[Path], list[IngestResult]]:
    found = discover_customers(customers_dir)
    if folders is not None:
        wanted = {Path(f).name for f in folders}
        found = [f for f in found if f.name in wanted]
        missing = sorted(wanted - {f.name for f in found})
        return found, [no_folder(Path(customers_dir) / name, ingested_root) for name in missing]
    rejected = []
    for path, why in not_customer_folders(customers_dir):
        warn_no_customer_folder(path, why)
        if CUSTOMER_ID.fullmatch(path.name):  # a customer's botched upload (a file or a link where its folder goes)
            rejected.append(no_folder(path))
    return found, rejected


def warn_no_customer_folder(path: Path, why: str) -> None:
    """The warning for an entry of the uploads folder that is no customer folder (the full scans'
    and the hour's): a customer's botched upload is left out, an entry no customer can bear the
    name of (README.txt, acme.zip) ignored, failing no customer (exit 0)."""
    if why.startswith(MISNAMED_FOLDER):  # the hour's, said once (a full scan rejects it as a customer)
        log.warning("%s %s: its uploads are not read until it is renamed", shown_name(str(path)), why)
    elif CUSTOMER_ID.fullmatch(path.name):
        log.warning("%s is no customer folder: it %s; left out (the other customers go on)", path, why)
    else:
        log.warning("%s is no customer folder: it %s, and no customer id (ASCII letters, digits, - and _); ignored",
                    shown_name(str(path)), why)


@task(tags=["dvc"])
def version_data(params: Params) -> str:
    """``dvc add`` the data root and push it to the remote (retried in metagan.versioning); returns
    the data version."""
    root = dvc_root(params)
    versioning.ensure_dvc_repo(root, params.storage.dvc_remote)
    version = versioning.track(root, data_target(params))
    versioning.push(root, data_target(params))
    return version


# Bounded fan-out: each task holds MLflow (SQLite) connections, and 50 at once exhausted its
# connection pool (measured with bench/orchestration.py); on 2 cores more threads buy nothing.
@flow(name="ingest", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=FANOUT_WORKERS))
def ingest(params: Params, customers_dir: str | None = None, source: str | None = None,
           folders: list[str] | None = None) -> Ingestion:
    """``folders``: only these customer folders of ``customers_dir`` (the hourly run's changed ones)."""
    logger = get_run_logger()
    classes = pack_tasks(params, source)
    results: list[IngestResult] = []
    if customers_dir:
        ingested_root = params.resolve(params.paths.ingested_customers)
        found, results = customer_folders(customers_dir, folders, ingested_root)
        futures = [ingest_one.submit(f, params) for f in found]
        done = [f.result() for f in futures]
        release_unwritten([r.customer_id for r in done if not r.ok], ingested_root)
        results += done
    for r in results:
        if r.ok:
            logger.info("customer %s: %d shots%s", r.customer_id, r.shots,
                        f", rejected {r.rejected}" if r.rejected else "")
        else:
            logger.warning("customer rejected: %s", r.error)
    version = version_data(params)
    if results:  # after the data is versioned and pushed: an ingestion that failed there is redone
        record_ingestion(results)
    logger.info("data version %s (%d task classes)", version, classes)
    return Ingestion(version, classes, {r.customer_id: r for r in results})
