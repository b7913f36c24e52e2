"""ONNX export of a customer's generator and its parity against torch (sampling with onnxruntime
alone, which serving needs without torch, is :mod:`metagan.onnx_runtime`)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from metagan.files import write_bytes
from metagan.served import ServedGenerator
from metagan.torch_export_lock import TORCH_EXPORT
# the runtime side, importable from here too (callers that export also sample)
from metagan.onnx_runtime import (INPUT_NAME, MIN_IMAGES_TO_SLICE, OUTPUT_NAME, OnnxGenerator, cpu_cores,  # noqa: F401
                                  noise, onnx_session, sample_onnx, to_uint8_images)

log = logging.getLogger(__name__)
# the exporter warns once per missing torchvision op, which this project never uses
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

# One exported graph per architecture: customers of one meta-model differ only in weights, so
# after the first (slow, 2-4 s) dynamo export, later exports copy the graph and swap the weight
# initializers by name (~10 ms). Every export is still checked against torch by check_parity.
# The graphs are also kept on disk, for the next process: each Dask worker of each hour's
# flow is a fresh process, and customers' shot counts (1 to 20) make up to 20 graphs a worker.
_TEMPLATES: dict[tuple, bytes] = {}


def _user_cache() -> Path:
    """The user's own cache folder (``XDG_CACHE_HOME``, else ``~/.cache``): a graph read from a
    folder others can write to would be code they chose, run for every customer."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory: a folder of this user's own in the temp folder
            base = str(Path(tempfile.gettempdir()) / f"metagan-{os.getuid()}")
    return Path(base) / "metagan" / "onnx-templates"


TEMPLATE_CACHE = _user_cache()


def export_generator_onnx(generator: ServedGenerator, path: str | Path, opset: int = 18, fresh: bool = False) -> Path:
    """Write ``generator`` as ONNX: input ``z`` (batch, z_dim) -> ``images`` (batch, C, H, W) in [-1, 1].
    ``fresh``: export it anew, not from the graph kept for its kind, and keep the new graph instead
    (one kept graph damaged, but still a graph, failed its customers at every run)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = generator.cpu().eval()
    # customers of one design share a graph when their conditions have the same shapes (the same
    # number of shots, for the designs that keep them)
    key = (generator.template_key(), opset)
    model = None
    if not fresh:
        with TORCH_EXPORT.shared():  # a graph kept: its weights swapped, beside other customers' work
            model = _kept_graph(key, generator)
    if model is None:
        # tracing holds torch alone: no other thread's torch work beside it (metagan.torch_export_lock)
        with TORCH_EXPORT.exclusive():
            # another thread's export of this key, while this one waited
            model = None if fresh else _kept_graph(key, generator)
            if model is None:
                model = _exported_once_more_if_it_fails(generator, opset)
                _TEMPLATES[key] = model.SerializeToString()
                _store_template(key, _TEMPLATES[key])
    return write_bytes(path, model.SerializeToString())  # weights embedded: one self-contained file


def _kept_graph(key: tuple, generator: ServedGenerator):
    """The graph exported before for ``key`` (this process's, else the one stored on disk) with
    ``generator``'s weights, or None."""
    template = _TEMPLATES.get(key) or _stored_template(key)
    model = _from_template(template, generator) if template else None
    if model is not None:
        _TEMPLATES[key] = template
    return model


def _template_file(key: tuple) -> Path:
    """Where the graph of ``key`` is kept: named by the key and everything the graph depends on
    besides it (this package's code, torch, onnx and onnxscript), so new code exports afresh."""
    blob = json.dumps([repr(key), _code_digest()] + [_version(p) for p in ("torch", "onnx", "onnxscript")])
    return TEMPLATE_CACHE / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.onnx"


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def _stored_template(key: tuple) -> bytes | None:
    try:
        return _template_file(key).read_bytes()
    except OSError:  # none yet, or unreadable: export afresh
        return None


def _store_template(key: tuple, template: bytes) -> None:
    try:  # written whole or not at all (files.write_bytes): a reader never sees half a graph
        TEMPLATE_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_bytes(_template_file(key), template)
    except OSError as e:  # a cache: the export itself has succeeded
        log.warning("could not keep the exported graph for the next process: %s", e)


def _exported_once_more_if_it_fails(generator: ServedGenerator, opset: int):
    """:func:`_dynamo_export`, tried a second time after torch's tracing caches are cleared when the
    first try fails. A scheduled hour on Dask workers failed a customer now and then at its first
    export of a shot count ("We found a fake tensor in the exported program constant's list ...
    lifted_tensor_3", probe of 2026-12-07; the same customer passed on a later run). Other threads'
    torch work beside an export fails it so (:mod:`metagan.torch_export_lock`, closed since), but a
    worker of one thread runs none, and that hour's workers were not recorded: its cause is not
    established, so the retry stays. The first failure's traceback is logged whole, to find it; a
    second failure is the customer's, as before. Called holding the lock alone."""
    try:
        return _dynamo_export(generator, opset)
    except Exception:  # noqa: BLE001 (torch's exporter raises its own classes and plain ones)
        log.warning("the ONNX export failed; exporting once more with torch's tracing caches cleared",
                    exc_info=True)
    torch._dynamo.reset()
    return _dynamo_export(generator, opset)


def _dynamo_export(generator: ServedGenerator, opset: int):
    z = torch.randn(2, generator.z_dim)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter is chatty about things that do not apply here
        program = torch.onnx.export(
            generator, (z,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes={"z": {0: batch}}, verbose=False,
            optimize=generator.onnx_constant_folding,
        )
    model = program.model_proto
    max_batch = generator.max_batch()
    if max_batch is not None:  # read by the serving side (metagan.onnx_runtime.OnnxGenerator)
        from metagan.onnx_runtime import MAX_BATCH_KEY

        entry = model.metadata_props.add()
        entry.key, entry.value = MAX_BATCH_KEY, str(max_batch)
    return model


def _from_template(template: bytes, generator: ServedGenerator):
    from google.protobuf.message import DecodeError
    import onnx

    try:
        return _swap_weights(onnx.load_from_string(template), generator)
    except DecodeError:  # a damaged file in the cache: export afresh (and replace it)
        return None


def _swap_weights(model, generator: ServedGenerator):
    """The template graph with ``generator``'s weights, or None if the names do not line up."""
    from onnx import numpy_helper

    state = {k: v.detach().numpy() for k, v in generator.served_state().items()}
    inits = {init.name: i for i, init in enumerate(model.graph.initializer)}
    if not set(state) <= set(inits):
        return None
    for name, value in state.items():
        old = model.graph.initializer[inits[name]]
        if list(old.dims) != list(value.shape):
            return None
        old.CopyFrom(numpy_helper.from_array(value, name))
    return model


def check_parity(generator: ServedGenerator, onnx_path: str | Path, batch: int = 8, seed: int = 0,
                 session=None) -> float:
    """Max absolute difference between torch and onnxruntime outputs on the same noise
    (``session``: an onnxruntime session of ``onnx_path`` already open, to reuse)."""
    z = noise(batch, generator.z_dim, seed)
    with torch.no_grad():
        expected = generator.cpu().eval()(torch.from_numpy(z)).numpy()
    (got,) = (session or onnx_session(onnx_path)).run([OUTPUT_NAME], {INPUT_NAME: z})
    return float(np.abs(expected - got).max())


