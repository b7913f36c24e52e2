"""ONNX export of a customer's generator, parity against torch, and onnxruntime-only sampling."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from metagan.files import write_bytes
from metagan.nets import SampleGenerator

log = logging.getLogger(__name__)
# the exporter warns once per missing torchvision op, which this project never uses
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

INPUT_NAME, OUTPUT_NAME = "z", "images"
# torch.export keeps global tracing state: two exports in threads of one process (a flow fanning
# customers out over a thread pool) corrupt each other ("ProxyTorchDispatchMode slot already
# occupied"), so exports are serialised; adaptation itself still runs in parallel.
_EXPORT_LOCK = threading.Lock()


# One exported graph per architecture: customers of one meta-model differ only in weights, so
# after the first (slow, ~2 s) dynamo export, later exports copy the graph and swap the weight
# initializers by name (~10 ms). Every export is still checked against torch by check_parity.
_TEMPLATES: dict[tuple, bytes] = {}


def export_generator_onnx(generator: SampleGenerator, path: str | Path, opset: int = 18) -> Path:
    """Write ``generator`` as ONNX: input ``z`` (batch, z_dim) -> ``images`` (batch, C, H, W) in [-1, 1]."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = generator.cpu().eval()
    # customers of one design share a graph when their conditions have the same shapes (fusion:
    # the same number of shots)
    key = (generator.generator.cfg, tuple((k, tuple(v.shape)) for k, v in generator.condition.items()), opset)
    with _EXPORT_LOCK:
        template = _TEMPLATES.get(key)
        model = _swap_weights(onnx.load_from_string(template), generator) if template else None
        if model is None:
            model = _dynamo_export(generator, opset)
            _TEMPLATES[key] = model.SerializeToString()
    return write_bytes(path, model.SerializeToString())  # weights embedded: one self-contained file


def _dynamo_export(generator: SampleGenerator, opset: int):
    z = torch.randn(2, generator.z_dim)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter is chatty about things that do not apply here
        program = torch.onnx.export(
            generator, (z,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes={"z": {0: batch}}, verbose=False,
        )
    return program.model_proto


def _swap_weights(model, generator: SampleGenerator):
    """The template graph with ``generator``'s weights, or None if the names do not line up."""
    from onnx import numpy_helper

    state = {k: v.detach().numpy() for k, v in generator.state_dict().items()}
    inits = {init.name: i for i, init in enumerate(model.graph.initializer)}
    if not set(state) <= set(inits):
        return None
    for name, value in state.items():
        old = model.graph.initializer[inits[name]]
        if list(old.dims) != list(value.shape):
            return None
        old.CopyFrom(numpy_helper.from_array(value, name))
    return model


def onnx_session(model: str | Path | bytes, threads: int = 0):
    """An onnxruntime session for an ONNX file or serialized model bytes (CPU provider).

    ``threads``: intra-op threads (0: onnxruntime's default, one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


MIN_IMAGES_TO_SLICE = 256


class OnnxGenerator:
    """Runs an ONNX generator on the CPU with one single-threaded session per core, each taking a
    slice of the batch.

    Why not one session with a thread per core: onnxruntime's ConvTranspose (81% of this model's
    time) loops over the images of a batch and splits only each image's small GEMM across
    threads, so a second thread added just 26% (measured: 4,782 images/s on one thread, 6,017 on
    two). Slices of the batch on independent sessions scale with the cores instead (8,474 on two;
    docs/BENCHMARKS.md). Each image is computed exactly as a single session computes it, so the
    output does not depend on the number of workers.
    """

    def __init__(self, model: str | Path | bytes, workers: int | None = None):
        self.workers = max(1, workers or cpu_cores())
        self.sessions = [onnx_session(model, threads=1 if self.workers > 1 else 0) for _ in range(self.workers)]
        self.z_dim = int(self.sessions[0].get_inputs()[0].shape[1])
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx") if self.workers > 1 else None

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """(N, z_dim) float32 noise -> (N, C, H, W) images in [-1, 1]."""
        if self._pool is None or len(z) < 2 * self.workers:
            return self.sessions[0].run([OUTPUT_NAME], {INPUT_NAME: z})[0]
        chunks = np.array_split(z, self.workers)
        # onnxruntime releases the GIL while it runs, so the slices run in parallel
        outs = self._pool.map(lambda sc: sc[0].run([OUTPUT_NAME], {INPUT_NAME: sc[1]})[0], zip(self.sessions, chunks))
        return np.concatenate(list(outs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> "OnnxGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def noise(count: int, z_dim: int, seed: int) -> np.ndarray:
    """The noise a seed stands for; shared by torch and onnxruntime paths so they agree."""
    return np.random.default_rng(seed).standard_normal((count, z_dim)).astype(np.float32)


def check_parity(generator: SampleGenerator, onnx_path: str | Path, batch: int = 8, seed: int = 0) -> float:
    """Max absolute difference between torch and onnxruntime outputs on the same noise."""
    z = noise(batch, generator.z_dim, seed)
    with torch.no_grad():
        expected = generator.cpu().eval()(torch.from_numpy(z)).numpy()
    (got,) = onnx_session(onnx_path).run([OUTPUT_NAME], {INPUT_NAME: z})
    return float(np.abs(expected - got).max())


def to_uint8_images(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) float in [-1, 1] -> (N, H, W, C) uint8."""
    return ((np.clip(x, -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(0, 2, 3, 1)


def sample_onnx(onnx_path: str | Path | bytes | None, count: int, seed: int = 0, batch_size: int = 256,
                session=None, workers: int | None = None) -> np.ndarray:
    """``count`` images (N, H, W, C) uint8 from an ONNX generator, through onnxruntime alone.

    ``session``: an onnxruntime session or :class:`OnnxGenerator` to use instead of ``onnx_path``;
    ``workers``: sessions run in parallel over slices of each batch (default: one per core)."""
    if session is None:
        # a contact sheet's few images do not repay loading one session per core
        few = workers is None and count < MIN_IMAGES_TO_SLICE
        with OnnxGenerator(onnx_path, 1 if few else workers) as generator:
            return sample_onnx(None, count, seed, batch_size, session=generator)
    if isinstance(session, OnnxGenerator):
        run, z_dim = session, session.z_dim
    else:
        run, z_dim = (lambda z: session.run([OUTPUT_NAME], {INPUT_NAME: z})[0]), session.get_inputs()[0].shape[1]
    z = noise(count, z_dim, seed)
    out = [run(z[i : i + batch_size]) for i in range(0, count, batch_size)]
    return to_uint8_images(np.concatenate(out)) if out else np.zeros((0, 0, 0, 0), np.uint8)
