"""What a run leaves in the Prefect UI besides its logs: a table per adapt and per promote run
(customer, version, outcome and reason, key metrics) and a markdown summary per pipeline run
linking the MLflow runs and the output location. Built from the typed results, inside a flow run.
"""

from __future__ import annotations

import os

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from metagan import store, tracking
from metagan.metric_registry import METRICS
from metagan.lifecycle.registry import Adaptation
from metagan.lifecycle.promotion import PromotionResult


def _key_metrics(metrics: dict[str, float]) -> dict[str, str]:
    return {m.column or m.name: format(metrics[m.name], m.fmt) if m.name in metrics else ""
            for m in METRICS.values() if m.key}


def adapt_table(results: list[Adaptation]) -> None:
    """One row per customer: the version registered (or reused) as candidate, or the failure."""
    rows = [{"customer": a.customer_id, "version": a.version or "", "built": "reused" if a.reused else "new",
             "ok": a.ok, "error": a.error, **_key_metrics(a.metrics), "mlflow_run": a.run_id} for a in results]
    failed = sum(not a.ok for a in results)
    create_table_artifact(rows, key="adapt-customers",
                          description=f"{len(results)} customer(s) adapted, {failed} failed; candidates registered")


def promotion_table(results: list[PromotionResult]) -> None:
    """One row per customer: the candidate considered, the gate's decision, its reasons and the
    metrics it judged."""
    rows = [{"customer": r.customer_id, "version": r.version or "", "decision": r.outcome.value,
             "serving": r.serving, "reason": r.reason, **_key_metrics(r.metrics)} for r in results]
    refused = sum(r.outcome.value == "refused" for r in results)
    create_table_artifact(rows, key="promotion", description=f"{len(results)} customer(s): "
                          f"{sum(r.serving for r in results)} serving their candidate, {refused} refused by the gate")


def mlflow_ui() -> str:
    """Where the MLflow UI of this registry is: the tracking server itself, or the address
    ``mlflow ui`` serves the embedded SQLite store on by default."""
    uri = store.tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else os.environ.get(
        "METAGAN_MLFLOW_UI", "http://127.0.0.1:5000")


def run_link(run_id: str, label: str) -> str:
    if not run_id:
        return label
    return f"[{label}]({mlflow_ui()}/#/experiments/{tracking.experiment_id()}/runs/{run_id})"


def pipeline_summary(result, out: str) -> None:
    """Markdown: data and meta-model versions, each customer's version, decision and MLflow run,
    and where the images are. ``result``: a :class:`flows.pipeline.PipelineResult`."""
    promoted = {p.customer_id: p for p in result.promoted}
    lines = [f"# metagan pipeline: {'partial' if result.partial else 'complete'}", "",
             f"- data version `{result.data.data_version}` ({result.data.task_classes} task classes)",
             f"- meta-model `metagan-meta` version {result.meta.version} "
             f"({result.meta.how})",
             f"- images: `{out}` (one folder per customer: the images (a shard `images.tar`, or PNGs), "
             "`contact-sheet.png`, `index.html`, `manifest.json`)",
             f"- MLflow: {mlflow_ui()} (embedded store: `mlflow ui --backend-store-uri {store.tracking_uri()}`)",
             "", "| customer | version | decision | reason | MLflow run |", "|---|---|---|---|---|"]
    for a in result.adapted:
        p = promoted.get(a.customer_id)
        decision = p.outcome.value if p else "failed"
        reason = (p.reason if p else a.error).replace("|", "/")
        lines.append(f"| {a.customer_id} | {a.version or ''} | {decision} | {reason} | "
                     f"{run_link(a.run_id, 'adapt run')} |")
    for cid, error in result.data.rejected.items():
        lines.append(f"| {cid} | | rejected at ingestion | {error.replace('|', '/')} | |")
    for b in result.generated:
        lines.append(f"\n{b.count} images of `{b.model_name}` version {b.version} in `{b.location}`" if b.ok
                     else f"\nno batch for {b.customer_id}: {b.error}")
    create_markdown_artifact("\n".join(lines), key="pipeline-summary",
                             description="what this pipeline run did, with links to MLflow")
