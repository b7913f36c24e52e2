"""ONNX batch generation throughput on the CPU: onnxruntime (as the batch job runs it, and as one
plain session) vs torch eager for the same generator, and the fraction of the machine's FLOP
roofline reached.

    python bench/onnx_throughput.py --checkpoint metagan/pretrained/warp-small.pt --batch 256 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from metagan.config import SHIPPED_META_MODEL

import numpy as np
import torch


def generator_flops(g: torch.nn.Module, z_dim: int) -> int:
    """Multiply-adds x 2 of one sample, counted from the layers (conv, transposed conv, linear)."""
    flops = 0

    def hook(m, inp, out):
        nonlocal flops
        if isinstance(m, torch.nn.Linear):
            flops += 2 * m.in_features * m.out_features
        elif isinstance(m, torch.nn.ConvTranspose2d):
            flops += 2 * inp[0][0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Conv2d):
            flops += 2 * out[0].numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]

    hs = [m.register_forward_hook(hook) for m in g.modules()]
    with torch.no_grad():
        g(torch.randn(1, z_dim))
    for h in hs:
        h.remove()
    return flops


def peak_matmul_flops(seconds: float = 2.0) -> float:
    """Measured sgemm peak of this machine (fp32), the practical roofline."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - start)


def rate(fn, batch: int, seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(SHIPPED_META_MODEL))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()

    from metagan.adapt import adapt_to_customer
    from metagan.config import PROJECT_ROOT
    from metagan.data import preprocess_array
    from metagan.export import OnnxGenerator, cpu_cores, export_generator_onnx, noise, onnx_session

    sample = np.load(PROJECT_ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
    shots = np.stack([preprocess_array(sample[140, j], 32, 1) for j in range(5)])
    g = adapt_to_customer(args.checkpoint, shots, steps=0)
    path = export_generator_onnx(g, Path(tempfile.mkdtemp()) / "g.onnx")
    sess = onnx_session(path)
    z = noise(args.batch, g.z_dim, 0)
    zt = torch.from_numpy(z)
    with torch.no_grad():
        torch_rate = rate(lambda: g(zt), args.batch, args.seconds)
        # the same slicing trick for torch, for a fair reference: one intra-op thread, slices of
        # the batch on a thread per core (torch also releases the GIL inside its kernels)
        threads, cores = torch.get_num_threads(), cpu_cores()
        torch.set_num_threads(1)
        pool = ThreadPoolExecutor(cores)
        chunks = torch.chunk(zt, cores)
        torch_sliced_rate = rate(lambda: torch.cat(list(pool.map(g, chunks))), args.batch, args.seconds)
        torch.set_num_threads(threads)
    ort_one_session = rate(lambda: sess.run(None, {"z": z}), args.batch, args.seconds)
    with OnnxGenerator(path) as batch_job_runner:  # what the batch job uses
        ort_rate = rate(lambda: batch_job_runner(z), args.batch, args.seconds)
    flops = generator_flops(g, g.z_dim)
    peak = peak_matmul_flops()
    print(json.dumps({
        "machine": platform.platform(), "threads": threads, "cores": cores, "batch": args.batch,
        "torch_eager_images_per_s": round(torch_rate),
        "torch_eager_sliced_over_cores_images_per_s": round(torch_sliced_rate),
        "onnxruntime_one_session_images_per_s": round(ort_one_session),
        "onnxruntime_images_per_s": round(ort_rate),
        "onnxruntime_vs_torch": round(ort_rate / torch_rate, 2),
        "onnxruntime_vs_torch_sliced": round(ort_rate / torch_sliced_rate, 2),
        "gflop_per_image": flops / 1e9,
        "measured_sgemm_peak_gflops": round(peak / 1e9, 1),
        "onnxruntime_fraction_of_peak": round(ort_rate * flops / peak, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
