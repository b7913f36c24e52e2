"""Adapting changed customers at scale: the scale-out profile's cost per customer on Dask workers
against the embedded profile's marginal cost per customer, and where a scale-out customer's time
goes.

    python bench/adapt_fleet.py --customers 100 --workers 2 --report docs/results/adapt-fleet-....json

1. **embedded** (MLflow on SQLite, the thread pool): the ``adapt_customers`` flow over ``--small``
   customers, then over ``--large`` others; the marginal cost is the difference in wall time over
   the difference in customers (what one more customer costs once the process is warm), the
   median of ``--repeats`` such pairs.
2. **scale-out** (the stack on loopback: MLflow on PostgreSQL with artifacts in moto's S3, the
   Prefect server, ``--workers`` Dask worker processes of one thread): the same flow over
   ``--customers`` others, wall time per customer, cluster start included (a cold cluster: its
   workers import torch and MLflow, load the meta-model and the evaluator on their first
   customers); then once more over as many others on the same cluster, now warm, as a standing
   Dask cluster serves every hourly run after its first (the embedded marginal is a warm
   process's too).
3. **where the time goes** on the scale-out profile: ``registry.adapt_and_register`` for
   ``--profiled`` customers in this process (warm: one customer first), under cProfile, its time
   split into the adaptation's compute (fine-tuning, export, parity, metrics), MLflow requests by
   kind, the lock and the index.

Each flow adapts its own customer ids (same drawings), so none reuses another's models; the
shipped meta-model, default adaptation settings.
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

from bench.fleet import cpu_split, load, tree_cpu  # noqa: E402
from metagan.config import SHIPPED_META_MODEL  # noqa: E402


def project(work: Path, ids: list[str], shots: int, scaleout: bool) -> str:
    """A project folder: uploads for ``ids``, the shipped meta-model, the profile's remotes."""
    import yaml

    from tests.projects import write_uploads

    write_uploads(work / "uploads", {cid: 109 + i % 48 for i, cid in enumerate(ids)}, shots, broken=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source=str(ROOT / params["data"]["sample"]), packed_dir=str(work / "data/tasks"))
    params["meta"].update(init_checkpoint=str(SHIPPED_META_MODEL), minutes=0.0)
    params["paths"].update(data_root=str(work / "data"), ingested_customers=str(work / "data/customers"),
                           meta_checkpoint=str(work / "meta.pt"), customers_dir=str(work / "models"),
                           generated=str(work / "out"))
    params["storage"]["dvc_remote"] = str(work / "dvc-remote")
    params["scaleout"].update(dvc_remote="s3://metagan/dvc", generated="s3://metagan/generated")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return str(work / "params.yaml")


def adapt_flow(p: str, ids: list[str], data, meta_version: str, overrides: dict | None = None) -> dict:
    from flows.adapt_customers import adapt_customers_flow
    from flows.common import load as load_params

    params = load_params(p, overrides)
    wanted = set(ids)
    before, cpu = load(), tree_cpu(by_kind=True)
    start = time.perf_counter()
    results = adapt_customers_flow(params)(params, meta_version, data.data_version,
                                           [u for u in data.accepted if u.customer_id in wanted])
    wall = time.perf_counter() - start
    after = tree_cpu(by_kind=True)
    split = cpu_split(cpu, after, len(results))
    cpu = sum(after.values()) - sum(cpu.values())
    assert all(r.ok for r in results) and not any(r.reused for r in results), [r.error for r in results if not r.ok]
    return {"customers": len(results), "wall_s": round(wall, 1), "per_customer_s": round(wall / len(results), 3),
            "cpu_s": round(cpu, 1), "cpu_per_customer_by_process_s": split,
            "compute_inside_tasks_s": round(sum(r.seconds for r in results), 1),
            "processes": len({r.worker for r in results}), "load_before": before, "load_after": load()}


WATCHED = {  # (module, function) -> what it is, for the breakdown
    ("metagan.customer_model", "adapt_customer"): "compute: fine-tune, export, parity, metrics, contact sheet",
    ("metagan.model_versions", "log_onnx_model"): "MLflow: log the ONNX model (its files to the artifact store), register it",
    ("metagan.tracking", "start_run"): "MLflow: the run (start, params, params.yaml, end)",
    ("metagan.model_versions", "find_version"): "MLflow: find an identical version",
    ("metagan.tracking", "log_metrics"): "MLflow: log metrics",
    ("metagan.tracking", "log_file"): "MLflow: log the contact sheet",
    ("metagan.model_versions", "set_alias"): "MLflow: set the candidate alias",
    ("metagan.lifecycle.registry", "registry_index"): "fleet index: record the adaptation",
    ("metagan.lifecycle.registry", "meta_checkpoint"): "the meta-model's checkpoint (cached after the first)",
}


def where_time_goes(p: str, data, meta_version: str, ids: list[str]) -> dict:
    """``adapt_and_register`` for ``ids[1:]`` in this process, after ``ids[0]`` (warm-up), with a
    clock around each step it takes (not a profiler: its overhead would inflate the compute)."""
    import importlib
    from contextlib import contextmanager

    import requests

    from flows.common import load as load_params
    from flows.locks import customer_locker
    from metagan.lifecycle import registry

    params = load_params(p)
    uploads = {u.customer_id: u for u in data.accepted}
    lock = customer_locker(params)
    registry.adapt_and_register(uploads[ids[0]], params, meta_version, data.data_version, lock)
    spent: dict[str, float] = {}

    def clocked(what: str, fn):
        def timed_call(*a, **k):
            start = time.perf_counter()
            try:
                result = fn(*a, **k)
            finally:
                spent[what] = spent.get(what, 0.0) + time.perf_counter() - start
            if hasattr(result, "__enter__") and what.startswith("MLflow: the run"):  # a context manager
                return _clocked_context(result, what)
            return result
        return timed_call

    @contextmanager
    def _clocked_context(cm, what):
        start = time.perf_counter()
        value = cm.__enter__()
        spent[what] = spent.get(what, 0.0) + time.perf_counter() - start
        try:
            yield value
        except BaseException as e:
            cm.__exit__(type(e), e, e.__traceback__)
            raise
        start = time.perf_counter()
        cm.__exit__(None, None, None)
        spent[what] = spent.get(what, 0.0) + time.perf_counter() - start

    def locked(name):
        start = time.perf_counter()
        cm = lock(name)
        cm.__enter__()
        spent["per-customer lock"] = spent.get("per-customer lock", 0.0) + time.perf_counter() - start
        return cm

    requests_made = [0]
    send = requests.Session.send

    def counting(session, *a, **k):
        requests_made[0] += 1
        return send(session, *a, **k)

    patched = []
    for (module, name), what in WATCHED.items():
        mod = importlib.import_module(module)
        patched.append((mod, name, getattr(mod, name)))
        setattr(mod, name, clocked(what, getattr(mod, name)))
    requests.Session.send = counting
    start = time.perf_counter()
    try:
        for cid in ids[1:]:
            registry.adapt_and_register(uploads[cid], params, meta_version, data.data_version,
                                        lambda name: _Held(locked(name)))
    finally:
        for mod, name, fn in patched:
            setattr(mod, name, fn)
        requests.Session.send = send
    wall = time.perf_counter() - start
    n = len(ids) - 1
    spent["other (untimed steps)"] = wall - sum(spent.values())
    return {"customers": n, "wall_per_customer_s": round(wall / n, 3),
            "per_customer_s": {k: round(v / n, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])},
            "http_requests_per_customer": round(requests_made[0] / n, 1)}


class _Held:
    """A lock already taken (its acquisition timed), released on exit."""

    def __init__(self, cm):
        self.cm = cm

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def embedded(args) -> dict:
    """``--repeats`` pairs of flows (``--small`` then ``--large`` new customers each): the marginal
    cost is the median of the pairs' (a difference of two single runs varied from 0.13 to 0.23 s
    a customer between otherwise equal runs)."""
    import statistics

    from flows.common import load as load_params
    from flows.ingest import ingest
    from flows.meta_train import meta_train

    with tempfile.TemporaryDirectory(prefix="adapt-fleet-embedded-") as tmp:
        work = Path(tmp)
        warm = [f"e0-{i:03d}" for i in range(2)]
        pairs = [([f"e{r}s-{i:03d}" for i in range(args.small)], [f"e{r}l-{i:03d}" for i in range(args.large)])
                 for r in range(args.repeats)]
        os.environ.update({"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow' / 'mlflow.db'}",
                           "METAGAN_PROJECT": str(work)})
        p = project(work, warm + [c for small, large in pairs for c in small + large], args.shots, scaleout=False)
        data = ingest(load_params(p), str(work / "uploads"))
        meta = meta_train(load_params(p), data.data_version)
        adapt_flow(p, warm, data, meta.version)  # imports, the first export: a warm process from here
        runs = []
        for small, large in pairs:
            first, second = (adapt_flow(p, ids, data, meta.version) for ids in (small, large))
            runs.append({"small": first, "large": second, "marginal_per_customer_s": round(
                (second["wall_s"] - first["wall_s"]) / (args.large - args.small), 3)})
        return {"small": runs[0]["small"], "large": runs[0]["large"], "pairs": runs,
                "marginal_per_customer_s": statistics.median(r["marginal_per_customer_s"] for r in runs)}


def scaleout(args) -> dict:
    from tests.servers import scaleout_stack

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adapt-fleet-scaleout-")))
        servers = stack.enter_context(scaleout_stack(work / "servers", mlflow_workers=args.mlflow_workers))
        os.environ.update(servers["env"] | {"METAGAN_PROJECT": str(work)})
        # Prefect reads its settings (the server's address) when first imported: after the environment
        from flows.common import load as load_params, local_cluster_kwargs
        from flows.ingest import ingest
        from flows.meta_train import meta_train

        ids = [f"s-{i:03d}" for i in range(args.customers)]
        warm_ids = [f"w-{i:03d}" for i in range(args.customers)]
        profiled = [f"p-{i:03d}" for i in range(args.profiled + 1)]
        p = project(work, ids + warm_ids + profiled, args.shots, scaleout=True)
        data = ingest(load_params(p), str(work / "uploads"))
        meta = meta_train(load_params(p), data.data_version)
        # the cluster the flow would start (flows.common.fanout_runner's), started here so that Dask's
        # own sampling profiler can say afterwards where the workers' time went
        from distributed import Client, LocalCluster

        start = time.perf_counter()
        cluster = stack.enter_context(LocalCluster(**local_cluster_kwargs(args.workers, 1)))
        started = time.perf_counter() - start
        on_cluster = {"scaleout": {"dask_address": cluster.scheduler_address}}
        out = adapt_flow(p, ids, data, meta.version, on_cluster)
        out |= {"workers": args.workers, "mlflow_workers": args.mlflow_workers, "cluster_start_s": round(started, 1),
                "per_customer_with_cluster_start_s": round((out["wall_s"] + started) / out["customers"], 3)}
        print(json.dumps({"scaleout": out}), flush=True)
        out["warm"] = adapt_flow(p, warm_ids, data, meta.version, on_cluster)
        with Client(cluster.scheduler_address) as client:
            out["worker_time"] = worker_profile(client.profile())
        print(json.dumps({"scaleout": out}), flush=True)
        return {"scaleout": out, "scaleout_breakdown": where_time_goes(p, data, meta.version, profiled)}


PHASES = {  # a frame's function -> the phase of a task it belongs to (the innermost match wins)
    "adapt_customer": "compute (adapt_customer: fine-tune, export, parity, metrics)",
    "log_onnx_model": "MLflow: log and register the ONNX model",
    "start_run": "MLflow: the run",
    "_end_run": "MLflow: the run",
    "log_metrics": "MLflow: metrics and files",
    "log_file": "MLflow: metrics and files",
    "find_version": "MLflow: find an identical version",
    "set_alias": "MLflow: set the alias",
    "adapt_and_register": "registry: the rest of adapt_and_register",
    "run_task_sync": "Prefect: the task run around it",
}


def worker_profile(tree: dict) -> dict:
    """Dask's sampling profile of the workers (every thread, every 10 ms) as shares of the samples,
    by the phase each sample's innermost known frame belongs to."""
    total = tree.get("count", 0) or 1
    shares: dict[str, int] = {}

    def walk(node: dict, phase: str) -> None:
        name = node.get("description", {}).get("name", "")
        phase = PHASES.get(name, phase)
        inner = sum(c["count"] for c in node.get("children", {}).values())
        if node["count"] > inner:
            shares[phase] = shares.get(phase, 0) + node["count"] - inner
        for child in node.get("children", {}).values():
            walk(child, phase)

    walk(tree, "Dask and Python outside any task (idle, heartbeats, communication)")
    return {"samples": total, "share": {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100, help="scale-out: customers adapted in one flow run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--small", type=int, default=10, help="embedded: the first (warm) flow run's customers")
    ap.add_argument("--large", type=int, default=40, help="embedded: the second flow run's customers")
    ap.add_argument("--repeats", type=int, default=3, help="embedded: pairs of flows (the median pair counts)")
    ap.add_argument("--profiled", type=int, default=6)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--mlflow-workers", type=int, default=2)
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--phase", choices=["embedded", "scaleout"], help=argparse.SUPPRESS)
    ap.add_argument("--report")
    args = ap.parse_args()
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    if args.phase:  # one profile per process: Prefect reads its settings (the API's address) once
        print("RESULT " + json.dumps(embedded(args) if args.phase == "embedded" else scaleout(args)), flush=True)
        return
    report = {"machine": platform.platform(), "cpus": os.cpu_count(), "date": str(date.today()), "nice": os.nice(0),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "load_start": load()}
    for phase in ([] if args.skip_embedded else ["embedded"]) + ["scaleout"]:
        proc = subprocess.run([sys.executable, *sys.argv, "--phase", phase], capture_output=True, text=True)
        found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"the {phase} phase failed: {proc.stderr[-3000:]}")
        result = json.loads(found[-1].removeprefix("RESULT "))
        report |= {"embedded": result} if phase == "embedded" else result
        print(json.dumps(report), flush=True)
    if "embedded" in report:
        marginal = report["embedded"]["marginal_per_customer_s"]
        report["ratio_scaleout_to_embedded_marginal"] = round(report["scaleout"]["per_customer_s"] / marginal, 2)
        report["ratio_warm_scaleout_to_embedded_marginal"] = round(
            report["scaleout"]["warm"]["per_customer_s"] / marginal, 2)
    print(json.dumps(report, indent=2))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
