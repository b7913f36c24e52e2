"""``adapt-changed``: the hourly adaptation, planned from what changed (:mod:`metagan.lifecycle.fleet`).

1. the upload folders whose files changed since their last ingestion (directory entries only; with
   ``fleet.scan_uploads: false`` none: the uploads were ingested as they arrived, and recorded);
2. if the meta-model or the adaptation settings changed since the last hour, every customer;
3. those folders ingested (validated, packed, versioned), which records their shots in the index;
4. the customers whose shots differ from those their newest model was adapted from (this hour's,
   and any an earlier hour left undone), adapted on the profile's task runner and promoted.

An hour where nothing changed reads the folders' entries and one index query, and stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.common import dvc_root, data_target
from flows.ingest import Ingestion, ingest, warn_no_customer_folder
from flows.promote import adapt_and_promote
from metagan import versioning
from metagan.lifecycle import fleet
from metagan.config import Params
from metagan.customers import load_ingested
from metagan.lifecycle.meta_model import current_meta_version
from metagan.lifecycle.registry import Adaptation
from metagan.lifecycle.promotion import PromotionResult
from metagan.uploads import CustomerUploads


@dataclass(frozen=True)
class HourResult:
    changed: list[str] = field(default_factory=list)
    """Upload folders ingested again (their files changed), and the entries named as a customer
    that are no folder (a file, a link to nothing), changed since last seen: rejected."""
    adapted: list[Adaptation] = field(default_factory=list)
    promoted: list[PromotionResult] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    """Entries of the uploads folder no customer can be named (``README.txt``), first seen (or
    changed) this hour, with why: warned of once, then ignored as a full scan ignores them."""


@task
def changed_folders(params: Params, customers_dir: str) -> fleet.UploadChanges:
    """The upload folders whose files changed since their last ingestion, and the entries that
    are no customer folder, said as a full scan says them (once per change)."""
    changes = fleet.upload_changes(params, customers_dir)
    for name, why in (changes.not_folders | changes.strays).items():
        warn_no_customer_folder(Path(customers_dir) / name, why)
    return changes


@task
def mark_all_if_models_changed(params: Params, meta_version: str) -> int:
    """Every customer is to be adapted again when the meta-model or the adaptation settings changed."""
    return fleet.check_adaptation_identity(params, meta_version)


@task
def pending_customers(params: Params) -> list[str]:
    """The customers whose shots differ from those their newest model was adapted from."""
    return fleet.pending_adaptation(params)


@task
def load_pending(params: Params, customer_ids: list[str]) -> list[CustomerUploads]:
    """The packed shots of customers an earlier run ingested (this run's own come in memory)."""
    root = params.resolve(params.paths.ingested_customers)
    loaded = []
    for c in customer_ids:
        try:
            loaded.append(load_ingested(root, c))
        except Exception as e:  # its packed shots are gone or unreadable: the others go on, it stays pending
            get_run_logger().error("customer %s: cannot load its ingested shots: %s", c, e)
    return loaded


@flow(name="adapt-changed", log_prints=True)
def adapt_changed(params: Params, customers_dir: str) -> HourResult:
    logger = get_run_logger()
    # without scanning, the index alone says what was ingested; one rebuilt from the registry
    # (lost or damaged) no longer does, so this hour scans once
    scan = params.fleet.scan_uploads or not fleet.uploads_known(params)
    changes = changed_folders(params, customers_dir) if scan else fleet.UploadChanges([])
    changed = [str(f) for f in changes.folders]
    meta_version = current_meta_version()
    marked = mark_all_if_models_changed(params, meta_version)
    data: Ingestion | None = ingest(params, customers_dir, folders=changed) if changed else None
    if scan and not params.fleet.scan_uploads:
        fleet.uploads_scanned(params)
    pending = pending_customers(params)
    logger.info("%d upload folder(s) changed, %d customer(s) to adapt%s", len(changed), len(pending),
                f" ({marked} for a new meta-model or settings)" if marked else "")
    if not pending:
        return HourResult([Path(f).name for f in changed], rejected=data.rejected if data else {},
                          ignored=changes.strays)
    fresh = {u.customer_id: u for u in data.accepted} if data else {}
    # this run's shots in memory (never re-read: an overlapping run may rewrite the packed file)
    uploads = [fresh[c] for c in pending if c in fresh] + load_pending(params, [c for c in pending if c not in fresh])
    data_version = data.data_version if data else (versioning.data_version(dvc_root(params), data_target(params)) or "")
    # Dask workers lost mid-run: what was adapted first is promoted, the customers not done stay pending
    adapted, promoted = adapt_and_promote(params, meta_version, data_version, uploads)
    return HourResult([Path(f).name for f in changed], adapted, promoted, data.rejected if data else {}, changes.strays)
