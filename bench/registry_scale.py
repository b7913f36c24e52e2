"""The registry at 1,000 customers: are all found, and what does each command cost per customer?

Registers ``--customers`` customer models (one tiny ONNX model logged once, registered as a version
of every customer, with the tags and ``candidate`` alias a real adaptation leaves), then times what
scales with the number of customers:

- ``metagan models`` (``listings.model_rows``: two paginated listings);
- ``metagan promote`` over all customers, twice: the first promotes every candidate (gate, tags,
  aliases, each under the customer's lock), the second finds every candidate already serving;
- the nightly ``generate``'s customer list (``listings.customers_in_production``).

Each is timed in-process (the library call) and as the real command in a fresh process
(``python -m flows.app.cli``, start-up included). Every listing must return every customer.

    python bench/registry_scale.py --backend sqlite --customers 1000
    python bench/registry_scale.py --backend postgres --customers 1000   # the scale-out stack on loopback

``postgres`` starts the scale-out profile's servers (PostgreSQL, moto's S3, the MLflow and Prefect
servers; ``tests/servers.py``), so locks are Prefect's per-customer concurrency limits there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def register_customers(n: int, work: Path) -> float:
    """``n`` customers, each with one version (tags as adaptation leaves them) aliased ``candidate``."""
    import torch

    from metagan import model_versions, tracking
    from metagan.lifecycle import registry
    from metagan import model_names
    from metagan.export import export_generator_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    torch.manual_seed(0)
    onnx = export_generator_onnx(SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)), torch.randn(8)),
                                 work / "tiny.onnx")
    start = time.perf_counter()
    with tracking.start_run("registry-scale", {}) as run:
        first = model_versions.log_onnx_model(onnx, model_names.customer_model_name("c00000"), {})
    tags = {"parity_ok": "true", "meta_version": "1", "adapt_hash": "bench", "data_version": "bench"} | \
        registry.metric_tags({"parity_max_abs_diff": 1e-6, "shot_coverage": 0.2, "sample_diversity": 0.9,
                              "consistency": 0.9, "copy_rate": 0.0, "diversity": 1.0})
    for i in range(n):
        name = model_names.customer_model_name(f"c{i:05d}")
        mv = model_versions.register_version(name, first.source, run.info.run_id, tags | {"content_hash": f"h{i}"},
                                       model_id=first.source.removeprefix("models:/"))
        model_versions.set_alias(name, model_names.CANDIDATE, mv.version)
    return time.perf_counter() - start


def cli(args: list[str], env: dict, cwd: Path) -> float:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env | {
        "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_HOME": str(cwd / ".prefect")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.app.cli", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"metagan {' '.join(args)} failed: {proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc.stdout


def measure(n: int, work: Path, env: dict) -> dict:
    from metagan.lifecycle import listings, promotion
    from metagan.config import GateConfig
    from metagan.locks import no_lock

    os.environ.update(env)
    ids = [f"c{i:05d}" for i in range(n)]
    setup = register_customers(n, work)
    out = {"customers": n, "register_s": round(setup, 1)}

    rows, t = timed(listings.model_rows)
    assert len(rows) == n, "metagan models missed customers"
    out["models_table_s"] = round(t, 2)
    listed, t = timed(listings.customers_in_production)
    assert listed == [], "nothing is in production yet"

    # `metagan promote` as a command: the first promotes all, each under its customer's lock
    t, stdout = cli(["promote"], env, work)
    assert stdout.count(": promoted") == n, "promote missed customers"
    out["cli_promote_all_first_s"] = round(t, 1)
    t, stdout = cli(["promote"], env, work)
    assert stdout.count(": already production") == n
    out["cli_promote_all_again_s"] = round(t, 1)
    results, t = timed(lambda: promotion.promote_all(GateConfig(), lock=no_lock))
    assert len(results) == n and all(r.serving for r in results)
    out["promote_all_again_s"] = round(t, 2)

    listed, t = timed(listings.customers_in_production)
    assert listed == ids, "the nightly generate would miss customers"
    out["generate_listing_s"] = round(t, 2)
    t, stdout = cli(["models", "--json"], env, work)
    assert stdout.count('"kind": "customer"') == n
    out["cli_models_s"] = round(t, 1)
    out["per_customer_ms"] = {k.removesuffix("_s"): round(1000 * v / n, 2) for k, v in out.items()
                              if k.endswith("_s") and k != "register_s"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--report", help="write the figures as JSON here too")
    args = ap.parse_args()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="registry-scale-")))
        if args.backend == "sqlite":
            env = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
        else:
            from tests.servers import scaleout_stack

            env = stack.enter_context(scaleout_stack(work / "servers"))["env"]
        figures = measure(args.customers, work, env)
    report = {"backend": args.backend, "machine": platform.platform(), "cpus": os.cpu_count(),
              "date": str(date.today()), **figures}
    print(json.dumps(report, indent=2))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
