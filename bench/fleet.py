"""The fleet: N customers on either profile, and what the hourly and nightly work costs at N.

    python bench/fleet.py --profile embedded --customers 1000 --report docs/results/fleet-....json
    python bench/fleet.py --profile scaleout --customers 10000 --clients 8 ...

The fleet (each step timed; the load average is recorded with every figure):

1. **register**: one real customer model (a demo customer adapted from the shipped meta-model,
   small preset, 32x32; ``--model FILE`` reuses one) logged once and registered as a version of
   each of N customers with the tags an adaptation leaves (identity, metrics, checksum, file URI),
   ``candidate`` and ``production`` aliases: ``--clients`` parallel clients, 4 requests each.
2. **index**: the fleet index built from the registry (what ``metagan doctor`` and a first plan do).
3. **uploads**: a folder of 4 drawings per customer, recorded in the index as ingested.
4. **night, all due** (none drawn yet; ``--all-due-night``): the ``generate`` flow on the profile's
   runner, ``--count`` images a customer, one shard each.
5. **the mix**: 1% of upload folders get a new drawing; 0.5% of customers a new production version
   (registered, then promoted through ``promote_all``); 0.5% an hourly cadence
   (``fleet.set_schedule``); the rest are unchanged (default nightly cadence, drawn in step 4 or
   recorded as drawn: not due).
6. **plan the hour** (the upload-folder scan and the index queries; and the index queries alone,
   as with ``fleet.scan_uploads: false``) and **plan the night** (the index query), each
   ``--repeat`` times (the median); then the night's run for the 1% due, and the hour's
   ingestion of the changed folders (the real ingest flow, DVC included; ``--skip-hour-ingest``
   leaves it and its DVC set-up out) and its plan again.
7. **promote 200 changed customers** (new candidates, ``promote_all`` at the configured concurrency
   and at 1) and **doctor** (the index compared with the registry, nothing to repair).

``--profile scaleout`` starts the scale-out stack on loopback (PostgreSQL, moto's S3, the MLflow
and Prefect servers; ``tests/servers.py``): the index and the locks live in PostgreSQL, the batches
go to S3, the night fans out over a local Dask cluster of ``scaleout.dask_workers`` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import date, datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METRIC_TAGS = {"parity_ok": "true", "parity_max_abs_diff": "1e-06", "shot_coverage": "0.2", "sample_diversity": "0.9",
               "consistency": "0.9", "copy_rate": "0.0", "diversity": "1.0", "meta_version": "1",
               "adapt_hash": "bench", "data_version": "bench"}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


SERVERS = {"mlflow": ("mlflow", "huey"), "prefect": ("prefect server",), "s3": ("moto_server",),
           "postgresql": ("postgres",)}


def tree_cpu(by_kind: bool = False):
    """CPU seconds used so far by this process and every process it started (the servers, the Dask
    workers, PostgreSQL's backends), those already reaped included: what a phase costs whatever
    else the machine runs. ``by_kind``: split by server (``SERVERS``), the rest (this process,
    its flows' workers) as ``clients``."""
    ticks, procs = os.sysconf("SC_CLK_TCK"), {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            procs[int(d.name)] = (int(f[1]), sum(int(x) for x in f[11:15]), cmd)  # ppid; u+s+cu+cs times; command
    mine, grew = {os.getpid()}, True
    while grew:
        more = {p for p, (parent, _, _) in procs.items() if parent in mine} - mine
        grew, mine = bool(more), mine | more
    if not by_kind:
        return sum(procs[p][1] for p in mine if p in procs) / ticks
    kinds = dict.fromkeys([*SERVERS, "clients"], 0.0)
    for p in mine:
        ppid, cpu, cmd = procs[p]
        kind = next((k for k, marks in SERVERS.items() if any(m in cmd for m in marks)), "clients")
        parent_kind = next((k for k, marks in SERVERS.items() if any(m in procs.get(ppid, (0, 0, ""))[2] for m in marks)),
                           None)
        if kind == "clients" and parent_kind is not None:
            kind = parent_kind  # a server's own children (its backends, its workers)
        # a server counted whole: its reaped children are in its cutime; the bench's own cutime holds
        # the reaped Dask workers
        kinds[kind] += cpu / ticks
    return kinds


def tree_cpu_s() -> float:
    return tree_cpu()


def cpu_split(before: dict, after: dict, n: int) -> dict:
    """CPU seconds a customer, by process kind, between two :func:`tree_cpu` readings."""
    return {k: round((after[k] - before.get(k, 0.0)) / max(1, n), 4) for k in after}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 4)


def real_model(work: Path) -> Path:
    """A demo customer (hebrew-03) adapted from the shipped meta-model: a production-sized ONNX file."""
    from metagan.adapt import MetaModel
    from metagan.config import PACKAGE_DIR, SHIPPED_META_MODEL, load_params
    from metagan.customer_model import adapt_customer
    from metagan.customers import ingest_customer

    params = load_params().with_overrides(paths={"customers_dir": str(work / "model")})
    a = params.adapt
    uploads = ingest_customer(PACKAGE_DIR / "sample_data" / "customers" / "hebrew-03", work / "model-data",
                              params.data.image_size, params.data.channels, a.min_shots, a.max_shots,
                              a.max_image_pixels).uploads
    return adapt_customer(MetaModel.load(SHIPPED_META_MODEL), uploads, params).onnx_path


def register(ids: list[str], onnx: Path, clients: int, drawn_at: str | None) -> dict:
    """Every customer a version of the one logged model, aliased candidate and production."""
    from metagan import model_names, model_versions, tracking

    with tracking.start_run("fleet-bench", {}) as run:
        first = model_versions.log_onnx_model(onnx, model_names.customer_model_name("fleet-model"), METRIC_TAGS)
    source, model_id = first.source, first.source.removeprefix("models:/")
    tags = dict(first.tags) | ({"last_batch_created": drawn_at, "last_batch": "bench"} if drawn_at else {})

    def one(cid: str) -> None:
        name = model_names.customer_model_name(cid)
        mv = model_versions.register_version(name, source, run.info.run_id, tags | {"content_hash": f"bench-{cid}"},
                                       model_id=model_id)
        model_versions.set_alias(name, model_names.CANDIDATE, mv.version)
        model_versions.set_alias(name, model_names.PRODUCTION, mv.version)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, ids))
    return {"source": source, "model_id": model_id, "run_id": run.info.run_id, "tags": dict(first.tags)}


def write_uploads(folder: Path, ids: list[str]) -> None:
    import numpy as np
    from PIL import Image

    sample = np.load(ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
    for i, cid in enumerate(ids):
        (folder / cid).mkdir(parents=True)
        for j in range(4):
            Image.fromarray(sample[i % len(sample), j].astype(np.uint8) * 255).save(folder / cid / f"{j}.png")


def pack_all(params, ids: list[str], folder: Path) -> None:
    from flows.common import data_target, dvc_root
    from metagan import versioning
    from metagan.customers import ingest_customer

    root = params.resolve(params.paths.ingested_customers)
    a = params.adapt
    assert ingest_customer(folder, root, params.data.image_size, params.data.channels, a.min_shots, a.max_shots,
                           a.max_image_pixels).ok
    for cid in ids[1:]:
        shutil.copytree(root / ids[0], root / cid)
    subprocess.run(["git", "init", "-q"], cwd=dvc_root(params), check=True)
    versioning.ensure_dvc_repo(dvc_root(params), params.storage.dvc_remote)
    versioning.track(dvc_root(params), data_target(params))
    versioning.push(dvc_root(params), data_target(params))


def median_of(fn, repeat: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        value, t = timed(fn)
        times.append(t)
    return round(statistics.median(times), 4), value


def night(params, count: int) -> dict:
    from flows.generate import generate_flow

    before, cpu = load(), tree_cpu(by_kind=True)
    batches, wall = timed(lambda: generate_flow(params)(params, count=count))
    after = tree_cpu(by_kind=True)
    total = sum(after.values()) - sum(cpu.values())
    ok = sum(b.ok for b in batches)
    return {"customers": len(batches), "ok": ok, "images": ok * count, "wall_s": wall,
            "per_customer_s": round(wall / max(1, len(batches)), 4), "cpu_s": round(total, 1),
            "cpu_per_customer_s": round(total / max(1, len(batches)), 4),
            "cpu_per_customer_by_process_s": cpu_split(cpu, after, len(batches)),
            "load_before": before, "load_after": load()}


def new_candidates(ids: list[str], logged: dict, clients: int) -> None:
    """A new candidate for each (as an adaptation registers it, and records in the index)."""
    from metagan import model_names, model_versions
    from metagan.fleet_index import registry_index

    def one(cid: str) -> None:
        name = model_names.customer_model_name(cid)
        mv = model_versions.register_version(name, logged["source"], logged["run_id"],
                                       logged["tags"] | {"content_hash": f"bench2-{cid}"}, model_id=logged["model_id"])
        model_versions.set_alias(name, model_names.CANDIDATE, mv.version)
        registry_index().adapted(cid, f"bench2-{cid}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, ids))


def measure(args, work: Path, env: dict) -> dict:
    os.environ.update(env)
    import yaml

    from metagan.lifecycle import fleet
    from metagan.lifecycle import promotion
    from metagan.config import GateConfig, load_params
    from metagan.fleet_index import registry_index
    from metagan.lifecycle.fleet_repair import repair_index
    from metagan.uploads import folder_signature

    n = args.customers
    ids = [f"c{i:06d}" for i in range(n)]
    gate = GateConfig(max_coverage_regression=1.0)
    out: dict = {"customers": n, "load_start": load(), "nice": os.nice(0)}
    onnx = Path(args.model) if args.model else real_model(work)
    out["model_bytes"] = onnx.stat().st_size

    # the project: its params over the defaults (the profile's outputs, the bench's folders)
    generated = "s3://metagan/generated" if args.profile == "scaleout" else str(work / "out")
    settings = {"paths": {"generated": generated, "data_root": str(work / "data"),
                          "ingested_customers": str(work / "data/customers")},
                "data": {"source": str(ROOT / "metagan/sample_data/omniglot_sample.npz"),
                         "packed_dir": str(work / "data/tasks")},
                "storage": {"dvc_remote": str(work / "dvc-remote")},
                "scaleout": {"generated": generated, "dvc_remote": "s3://metagan/dvc",
                             "dask_workers": args.workers}}
    (work / "params.yaml").write_text(yaml.safe_dump(settings))
    os.environ["METAGAN_PROJECT"] = str(work)
    params = load_params(work / "params.yaml")

    # 1. register (those not drawn in the all-due night are recorded as drawn last night)
    drawn_at = None if args.all_due_night else datetime.now(timezone.utc).isoformat(timespec="seconds")
    logged, t = timed(lambda: register(ids, onnx, args.clients, drawn_at))
    out["register"] = {"wall_s": t, "per_customer_ms": round(1000 * t / n, 2), "clients": args.clients, "load": load()}
    print(json.dumps(out), flush=True)

    # 2. the index, from the registry
    index = registry_index()
    repair, t = timed(lambda: repair_index(index, fleet.default_every_s(params)))
    out["index_build"] = {"wall_s": t, "rows": repair.customers, "load": load()}

    # 3. uploads, recorded as ingested (their shots are what the registered versions were adapted from)
    uploads = work / "uploads"
    _, t = timed(lambda: write_uploads(uploads, ids))
    index.uploads_ingested([(cid, folder_signature(uploads / cid), f"bench-{cid}") for cid in ids])
    for cid in ids:
        index.adapted(cid, f"bench-{cid}")
    out["uploads_written_s"] = t
    # the ingested data as DVC versions it: one packed folder per customer (a copy of one: DVC's
    # cost is in the number of files), added and pushed once, so the hour's ingestion below pays
    # what a steady fleet pays
    if not args.skip_hour_ingest:
        _, t = timed(lambda: pack_all(params, ids, uploads / ids[0]))
        out["dvc_first_add_s"] = t

    from prefect import flow

    flow(lambda: None, name="warm-up")()  # Prefect's API (the ephemeral one embedded) started before any timing

    # 4. every customer due: the first night
    if args.all_due_night:
        out["night_all_due"] = night(params, args.count)
        print(json.dumps(out), flush=True)

    # 5. the mix
    k_up, k_prod, k_every = max(1, n // 100), max(1, n // 200), max(1, n // 200)
    changed_up = ids[1::100][:k_up]
    changed_prod = ids[3::200][:k_prod]
    hourly = ids[5::200][:k_every]
    for cid in changed_up:
        shutil.copy(uploads / cid / "0.png", uploads / cid / "new.png")
    new_candidates(changed_prod, logged, args.clients)
    promoted, t = timed(lambda: promotion.promote_all(gate, changed_prod, lock=_locker(params),
                                                     concurrency=params.fleet.promote_concurrency))
    assert all(r.serving for r in promoted), [r.reason for r in promoted if not r.serving]
    for cid in hourly:
        fleet.set_schedule(cid, 1.0, params)
    out["mix"] = {"new_uploads": len(changed_up), "new_production": len(changed_prod), "hourly_cadence": len(hourly)}

    # 6. the plans
    def plan_hour():
        changed = fleet.changed_upload_folders(params, uploads)
        fleet.check_adaptation_identity(params, "1")
        return changed, fleet.pending_adaptation(params)

    t_scan, found = median_of(lambda: fleet.changed_upload_folders(params, uploads), args.repeat)
    assert sorted(f.name for f in found) == sorted(changed_up), "the scan missed or invented changes"
    t_hour, _ = median_of(plan_hour, args.repeat)

    def plan_hour_from_index():  # fleet.scan_uploads: false (uploads ingested as they arrive)
        fleet.check_adaptation_identity(params, "1")
        return fleet.pending_adaptation(params)

    t_hour_index, _ = median_of(plan_hour_from_index, args.repeat)
    t_night, plan = median_of(lambda: fleet.plan_night(params), args.repeat)
    due = sorted(plan.due)
    assert due == sorted(changed_prod + hourly), "the night's plan is not the 1% due"
    out["plan"] = {"hour_s": t_hour, "hour_scan_s": t_scan, "hour_index_only_s": t_hour_index,
                   "night_s": t_night, "night_due": len(due),
                   "hour_changed": len(found), "repeat": args.repeat, "load": load()}
    print(json.dumps(out), flush=True)

    out["night_one_percent_due"] = night(params, args.count)

    # the hour's ingestion of the changed folders (the real ingest flow, DVC add and push included)
    if not args.skip_hour_ingest:
        from flows.ingest import ingest

        _, t = timed(lambda: ingest(params, str(uploads), folders=[str(uploads / c) for c in changed_up]))
        t_pending, pending = median_of(lambda: fleet.pending_adaptation(params), args.repeat)
        assert sorted(pending) == sorted(changed_up), "the hour's plan is not the customers whose uploads changed"
        out["hour_ingest"] = {"wall_s": t, "folders": len(changed_up), "pending_after": len(pending),
                              "pending_query_s": t_pending, "load": load()}

    # 7. promotion of 200 changed customers, and doctor
    figures = {}
    for concurrency, batch in ((params.fleet.promote_concurrency, ids[7:n:max(1, n // 200)][:200]),
                               (1, ids[9:n:max(1, n // 200)][:200])):
        new_candidates(batch, logged, args.clients)
        cpu = tree_cpu(by_kind=True)
        results, t = timed(lambda: promotion.promote_all(gate, batch, lock=_locker(params), concurrency=concurrency))
        after = tree_cpu(by_kind=True)
        assert sum(r.serving for r in results) == len(batch)
        figures[f"concurrency_{concurrency}"] = {
            "customers": len(batch), "wall_s": t, "per_customer_ms": round(1000 * t / len(batch), 2),
            "cpu_per_customer_ms": round(1000 * (sum(after.values()) - sum(cpu.values())) / len(batch), 2),
            "cpu_per_customer_by_process_s": cpu_split(cpu, after, len(batch)), "load": load()}
    out["promote_200"] = figures
    repair, t = timed(lambda: repair_index(index, fleet.default_every_s(params)))
    out["doctor_index"] = {"wall_s": t, "repaired": len(repair.repaired), "load": load()}
    return out


def _locker(params):
    from flows.locks import customer_locker

    return customer_locker(params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=["embedded", "scaleout"], default="embedded")
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4, help="parallel registration clients")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers (scale-out)")
    ap.add_argument("--mlflow-workers", type=int, default=2,
                    help="the tracking server's processes (scale-out; mlflow/start-server.sh's default)")
    ap.add_argument("--count", type=int, default=64, help="images a customer")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--all-due-night", action="store_true", help="also run the night with every customer due")
    ap.add_argument("--skip-hour-ingest", action="store_true",
                    help="leave out the DVC set-up and the hour's ingestion of the changed folders (step 6's last part)")
    ap.add_argument("--model", help="an ONNX file to register (default: adapt a demo customer, about a minute)")
    ap.add_argument("--models-through-server", action="store_true",
                    help="scale-out: the night's workers read models through the tracking server, not from the "
                         "bucket (no MLFLOW_ARTIFACTS_DESTINATION on the clients)")
    ap.add_argument("--report", help="write the figures as JSON here too")
    args = ap.parse_args()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-bench-")))
        env = {"PREFECT_LOGGING_LEVEL": "WARNING"}
        if args.profile == "embedded":
            env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"}
            from metagan import tracking

            os.environ.update(env)
            tracking.create_store()
        else:
            from tests.servers import scaleout_stack

            env |= stack.enter_context(scaleout_stack(work / "servers", mlflow_workers=args.mlflow_workers))["env"]
            if args.models_through_server:
                env.pop("MLFLOW_ARTIFACTS_DESTINATION")
        figures = measure(args, work, env)
    report = {"profile": args.profile, "machine": platform.platform(), "cpus": os.cpu_count(), "date": str(date.today()),
              "mlflow_workers": args.mlflow_workers if args.profile == "scaleout" else None,
              "models_read": None if args.profile == "embedded" else
              "through the tracking server" if args.models_through_server else "from the bucket",
              "command": " ".join([Path(sys.executable).name, *sys.argv]), **figures}
    print(json.dumps(report, indent=2))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
