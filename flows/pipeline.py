"""``pipeline``: ingest -> meta-train -> adapt customers -> promote -> batch generation."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow

from flows.artifacts import pipeline_summary
from flows.common import ensure_concurrency_limits
from flows.evaluator import register_evaluator
from flows.generate import generate_flow, output_uri
from flows.ingest import Ingestion, ingest
from flows.meta_train import meta_train
from flows.promote import adapt_and_promote
from metagan.checkpoint import ReadCheckpoint
from metagan.config import Params
from metagan.lifecycle.batches import Batch
from metagan.lifecycle.meta_model import EvaluatorRegistration, MetaRegistration
from metagan.lifecycle.registry import Adaptation
from metagan.lifecycle.promotion import Promotion, PromotionResult


@dataclass(frozen=True)
class PipelineResult:
    data: Ingestion
    meta: MetaRegistration
    evaluator: EvaluatorRegistration
    adapted: list[Adaptation] = field(default_factory=list)
    promoted: list[PromotionResult] = field(default_factory=list)
    generated: list[Batch] = field(default_factory=list)
    """The batch job's batches, one per customer served."""

    @property
    def partial(self) -> bool:
        """Some customer was rejected at ingestion, failed to adapt, was refused by the gate or got
        no batch."""
        return bool(self.data.rejected) or any(not a.ok for a in self.adapted) \
            or any(p.outcome is Promotion.REFUSED for p in self.promoted) or any(not b.ok for b in self.generated)


@flow(name="pipeline", log_prints=True)
def pipeline(params: Params, customers_dir: str | None = None, source: str | None = None, count: int | None = None,
             seed: int = 0, out: str | None = None, start: ReadCheckpoint | None = None) -> PipelineResult:
    """``start``: the warm start as the caller checked and read it (the CLI, before ingesting)."""
    ensure_concurrency_limits(params)  # before the first gpu- or dvc-tagged task
    data = ingest(params, customers_dir, source)
    meta = meta_train(params, data.data_version, start=start)
    evaluator = register_evaluator(params)
    # Dask workers lost mid-run: what was adapted first is promoted, then the run stops (exit 4)
    adapted, promoted = adapt_and_promote(params, meta.version, data.data_version, data.accepted)
    serving = [p.customer_id for p in promoted if p.serving]
    generated = generate_flow(params)(params, serving, count, seed, out) if serving else []
    result = PipelineResult(data, meta, evaluator, adapted, promoted, generated)
    pipeline_summary(result, out or output_uri(params))  # in the Prefect UI, with links to MLflow
    return result
