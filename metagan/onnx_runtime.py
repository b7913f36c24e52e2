"""Running an exported generator with onnxruntime alone: sessions, the noise a seed stands for,
sampling over the cores. No torch here: the batch job (``metagan generate``) imports only this,
numpy and Pillow, so a call costs well under a second of imports (docs/BENCHMARKS.md)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

INPUT_NAME, OUTPUT_NAME = "z", "images"


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


def interface_problem(session) -> str | None:
    """What keeps an onnxruntime session from serving as a generator, or None: one float input
    ``z`` of shape (N, z_dim) with a fixed z_dim, and an output ``images`` that turns one noise
    vector into one (1, C, H, W) image, C 1 or 3. A file given by hand (``metagan generate
    --model``) with another interface ended in a traceback (exit 70) at drawing (probe of 2026-12-06)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        return f"its inputs are {[i.name for i in inputs]}, not one input {INPUT_NAME!r}"
    z = inputs[0]
    if z.type != "tensor(float)" or len(z.shape) != 2 or not isinstance(z.shape[1], int) or z.shape[1] < 1:
        return f"its input {INPUT_NAME!r} is {z.type} of shape {z.shape}, not float of shape (N, z_dim)"
    if OUTPUT_NAME not in [o.name for o in outputs]:
        return f"it has no output {OUTPUT_NAME!r} (its outputs: {[o.name for o in outputs]})"
    try:
        out = session.run([OUTPUT_NAME], {INPUT_NAME: noise(1, z.shape[1], 0)})[0]
    except Exception as e:  # noqa: BLE001 (onnxruntime's own classes)
        return f"it does not run on noise of shape (1, {z.shape[1]}): {str(e).splitlines()[0][:200]}"
    shape = getattr(out, "shape", None)
    if getattr(out, "dtype", None) != np.float32 or shape is None or len(shape) != 4 or shape[0] != 1 \
            or shape[1] not in (1, 3) or min(shape[2:]) < 1:
        return (f"its output {OUTPUT_NAME!r} for one noise vector is {getattr(out, 'dtype', type(out).__name__)} "
                f"of shape {shape}, not float images of shape (1, 1 or 3, H, W)")
    return None


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


MIN_IMAGES_TO_SLICE = 256


MAX_BATCH_KEY = "metagan.max_batch"
"""ONNX metadata: the most images one session should compute in one call (absent: no limit)."""


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

    def __init__(self, model: str | Path | bytes, workers: int | None = None, threads: int | None = None):
        """``threads``: intra-op threads of each session (default: one when there are several
        sessions, else onnxruntime's one per core; one inside a fan-out task, whose neighbours use
        the other cores)."""
        self.workers = max(1, workers or cpu_cores())
        threads = threads if threads is not None else 1 if self.workers > 1 else 0
        self.sessions = [onnx_session(model, threads=threads) for _ in range(self.workers)]
        self.z_dim = int(self.sessions[0].get_inputs()[0].shape[1])
        # a model may say how many images one call should hold at most (MAX_BATCH_KEY): a design whose
        # memory grows with its shots (the removed fusion design's attention: 256 images of a 20-shot
        # customer peaked at 5.3 GB)
        meta = self.sessions[0].get_modelmeta().custom_metadata_map
        self.max_batch = int(meta[MAX_BATCH_KEY]) * self.workers if MAX_BATCH_KEY in meta else None
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


def to_uint8_images(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) float in [-1, 1] -> (N, H, W, C) uint8."""
    return ((np.clip(x, -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(0, 2, 3, 1)


def sample_onnx(onnx_path: str | Path | bytes | None, count: int, seed: int = 0, batch_size: int = 256,
                session=None, workers: int | None = None, threads: int | None = None) -> np.ndarray:
    """``count`` images (N, H, W, C) uint8 from an ONNX generator, through onnxruntime alone.

    ``session``: an onnxruntime session or :class:`OnnxGenerator` to use instead of ``onnx_path``;
    ``workers``: sessions run in parallel over slices of each batch (default: one per core);
    ``threads``: each session's threads (see :class:`OnnxGenerator`)."""
    if session is None:
        # a contact sheet's few images do not repay loading one session per core
        few = workers is None and count < MIN_IMAGES_TO_SLICE
        with OnnxGenerator(onnx_path, 1 if few else workers, threads) as generator:
            return sample_onnx(None, count, seed, batch_size, session=generator)
    if isinstance(session, OnnxGenerator):
        run, z_dim = session, session.z_dim
        batch_size = min(batch_size, session.max_batch or batch_size)
    else:
        run, z_dim = (lambda z: session.run([OUTPUT_NAME], {INPUT_NAME: z})[0]), session.get_inputs()[0].shape[1]
    z = noise(count, z_dim, seed)
    out = [run(z[i : i + batch_size]) for i in range(0, count, batch_size)]
    return to_uint8_images(np.concatenate(out)) if out else np.zeros((0, 0, 0, 0), np.uint8)
