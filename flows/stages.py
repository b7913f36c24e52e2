"""Entry points for the DVC stages in ``dvc.yaml`` (``python -m flows.stages STAGE``).

Inside ``dvc repro`` DVC has already materialised ``data/`` and holds the repository lock, so
these run the flows on the workspace data and never call DVC themselves.
"""

from __future__ import annotations

import json
import sys

from flows.adapt_customers import adapt_customers_flow
from flows.common import load
from flows.generate import generate
from flows.meta_train import meta_train
from flows.promote import promote


def main(stage: str) -> int:
    params = load(None)
    if stage == "meta-train":
        meta_train(workspace_data=True)
    elif stage == "adapt":
        results = adapt_customers_flow(params)()
        promote(customers=[r["customer_id"] for r in results if r.get("ok")])
        keep = ("shot_coverage", "sample_diversity", "parity_max_abs_diff", "consistency", "copy_rate", "diversity")
        metrics = {r["customer_id"]: {k: r[k] for k in keep if k in r} for r in results}
        out = params.resolve("artifacts/adapt_metrics.json")
        out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    elif stage == "generate":
        generate()
    else:
        print(f"unknown stage {stage!r}; one of meta-train, adapt, generate", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
