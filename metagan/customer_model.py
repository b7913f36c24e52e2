"""A customer's model: adapted from the meta-model, exported to ONNX, checked and scored, as one value.

:func:`adapt_customer` is the whole step from validated uploads to something the registry can
register: the generator (in memory), its ONNX file, the parity check, the metrics (floats, by
:mod:`metagan.metric_registry` name) and the contact sheet, laid out on disk as
:class:`CustomerFolder` says. Nothing here talks to MLflow.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from metagan.adapt import MetaModel, adapt_to_customer
from metagan.config import Params
from metagan.contact_sheet import contact_sheet
from metagan.errors import FileSystemFault
from metagan.export import check_parity, export_generator_onnx, onnx_session, sample_onnx
from metagan.files import write_json
from metagan.metric_registry import customer_metrics
from metagan.served import ServedGenerator
from metagan.torch_export_lock import TORCH_EXPORT
from metagan.uploads import CustomerUploads, validate_customer_id

CONTACT_SHEET_SAMPLES = 32


@dataclass(frozen=True)
class CustomerFolder:
    """Where a customer's adaptation writes its files: ``<paths.customers_dir>/<id>/``."""

    root: Path

    @classmethod
    def of(cls, params: Params, customer_id: str) -> "CustomerFolder":
        return cls(params.resolve(params.paths.customers_dir) / validate_customer_id(customer_id))

    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"

    @property
    def contact_sheet(self) -> Path:
        return self.root / "contact-sheet.png"

    @property
    def report(self) -> Path:
        return self.root / "report.json"


@dataclass(frozen=True)
class Parity:
    """ONNX against torch on the same noise."""

    max_abs_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol


@dataclass
class CustomerModel:
    customer_id: str
    generator: ServedGenerator
    """Whatever design the meta-model adapts (condgan's code, warp's shots...): noise -> images."""
    folder: CustomerFolder
    parity: Parity
    metrics: dict[str, float]
    """Every customer metric of :mod:`metagan.metric_registry`, parity included; floats until the
    registry writes them to MLflow."""
    shots: int
    content_hash: str
    """The uploads' identity: a model is rebuilt exactly when the usable images change."""
    files: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    method: str = ""
    seconds: float = 0.0

    @property
    def onnx_path(self) -> Path:
        return self.folder.onnx

    @property
    def contact_sheet(self) -> Path:
        return self.folder.contact_sheet

    @property
    def ok(self) -> bool:
        return self.parity.ok

    @property
    def error(self) -> str:
        if self.parity.ok:
            return ""
        return (f"customer {self.customer_id!r}: ONNX parity failed: max |torch - onnx| = "
                f"{self.parity.max_abs_diff:.2e} > {self.parity.atol:.0e}")

    def report(self) -> dict:
        """What ``report.json`` holds (and the DVC stage's metrics read)."""
        return {"customer_id": self.customer_id, "ok": self.ok, "error": self.error, "shots": self.shots,
                "files": self.files, "rejected": [list(r) for r in self.rejected], "method": self.method,
                "content_hash": self.content_hash, "seconds": self.seconds, "metrics": self.metrics}


@functools.lru_cache(maxsize=2)
def _cached_evaluator(path: str, mtime_ns: int):
    from metagan.evaluator import load_evaluator

    return load_evaluator(path, with_reference=True)


def evaluator_format(evaluator) -> tuple[int, int]:
    """(channels, image size) of the images an evaluator ``(net, reference)`` was trained and
    calibrated on: its distances mean nothing for other images."""
    net, _ = evaluator
    return net.channels, net.image_size


def load_gate_evaluator(params: Params):
    """The evaluator the customer metrics use, ``(net, reference)``, or None when the configured file
    is absent or made for another image format than ``data.channels`` and ``data.image_size`` (the
    evaluator-space metrics are then not computed, and the gate says it could not check them).
    Images a whole multiple of the evaluator's size are averaged down to it (64 px for a 32 px one)."""
    path = params.resolve(params.paths.evaluator)
    if not path.exists():
        return None
    evaluator = _cached_evaluator(str(path), path.stat().st_mtime_ns)
    channels, size = evaluator_format(evaluator)
    if channels != params.data.channels or params.data.image_size % size:
        _warn_once(f"the evaluator {path} takes {channels}-channel {size}x{size} images, not "
                   f"{params.data.channels}-channel {params.data.image_size}x{params.data.image_size}: the gate's "
                   "quality checks (consistency, copy rate, diversity) are not run")
        return None
    return evaluator


@functools.lru_cache(maxsize=8)
def _warn_once(message: str) -> None:
    logging.getLogger(__name__).warning(message)


def adapt_customer(meta: MetaModel, uploads: CustomerUploads, params: Params, evaluator=None,
                   seed: int = 0) -> CustomerModel:
    """Adapt to validated uploads, export ONNX, check it against torch, score
    it from the shots (with ``evaluator``, a ``(net, reference)`` pair) and draw its contact sheet."""
    start = time.monotonic()
    folder = CustomerFolder.of(params, uploads.customer_id)
    check_writable(folder, uploads.customer_id)
    generator = adapt_to_customer(meta, uploads.images, seed=seed, settings=params.adapt)
    served, parity = _exported_and_checked(generator, folder, params, uploads.customer_id, seed)
    with TORCH_EXPORT.shared():  # torch beside another thread's export breaks both (metagan.torch_export_lock)
        metrics = customer_metrics(generator, uploads.images, evaluator) | {"parity_max_abs_diff": parity.max_abs_diff}
    with writing(uploads.customer_id):
        contact_sheet(uploads.images, sample_onnx(None, CONTACT_SHEET_SAMPLES, session=served), folder.contact_sheet)
    model = CustomerModel(uploads.customer_id, generator, folder, parity, metrics, len(uploads.images),
                          uploads.content_hash, list(uploads.files), list(uploads.rejected), meta.method,
                          time.monotonic() - start)
    with writing(uploads.customer_id):
        write_json(folder.report, model.report())
    return model


def _exported_and_checked(generator, folder: CustomerFolder, params: Params, customer_id: str, seed: int):
    """(an onnxruntime session of the customer's exported graph, its parity with torch). A graph made
    from the one kept for its kind that onnxruntime refuses or that fails parity is exported anew,
    once, and the kept one replaced: a kept graph damaged but still a graph failed its customers at
    every run, and the failure was registered as theirs (a probe of 2026-12-07)."""
    for fresh in (False, True):
        with writing(customer_id):
            export_generator_onnx(generator, folder.onnx, params.export.opset, fresh=fresh)
        try:
            served = onnx_session(folder.onnx)  # one session for the parity check and the contact sheet (~17 ms)
        except Exception:  # noqa: BLE001 (onnxruntime's own classes: InvalidGraph, Fail...)
            if fresh:
                raise
            logging.getLogger(__name__).warning("customer %r: onnxruntime refused the graph made from the kept "
                                                "one; exporting afresh", customer_id, exc_info=True)
            continue
        with TORCH_EXPORT.shared():  # torch beside another thread's export breaks both (metagan.torch_export_lock)
            parity = Parity(check_parity(generator, folder.onnx, params.export.parity_batch, seed, session=served),
                            params.export.parity_atol)
        if parity.ok or fresh:
            return served, parity
        logging.getLogger(__name__).warning("customer %r: the graph made from the kept one failed the parity check "
                                            "(%.2e); exporting afresh", customer_id, parity.max_abs_diff)
    raise AssertionError("unreachable")


def check_writable(folder: CustomerFolder, customer_id: str) -> None:
    """Fail before the compute, not after it: a folder that takes no new file (read-only,
    immutable, no permission) fails the customer in milliseconds instead of after its fine-tuning."""
    try:
        folder.root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder.root, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise FileSystemFault.of(OSError(e.errno, e.strerror, str(folder.root)), f"customer {customer_id!r}: cannot "
                                 "write in") from e


@contextmanager
def writing(customer_id: str):
    """A file-system fault while writing a customer's files (its folder unwritable, the disk full)
    becomes a :class:`~metagan.errors.FileSystemFault` naming the customer and the file: it fails
    this customer, not the run (the writes are atomic, so nothing torn is left behind)."""
    try:
        yield
    except OSError as e:
        raise FileSystemFault.of(e, f"customer {customer_id!r}: cannot write") from e
