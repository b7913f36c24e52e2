"""Entry points for the DVC stages in ``dvc.yaml`` (``python -m flows.stages STAGE``).

Inside ``dvc repro`` DVC has already materialised ``data/`` and holds the repository lock, so
these run the flows on the workspace data and never call DVC themselves.
"""

from __future__ import annotations

import sys

from flows.adapt_customers import adapt_customers_flow
from flows.common import load
from flows.generate import generate
from flows.meta_train import meta_train
from flows.promote import promote
from metagan.files import write_json


def main(stage: str) -> int:
    if stage not in ("meta-train", "adapt", "generate"):
        print(f"unknown stage {stage!r}; one of meta-train, adapt, generate", file=sys.stderr)
        return 2
    params = load(None)
    if stage == "meta-train":
        meta_train(params, workspace_data=True)
    elif stage == "adapt":
        results = adapt_customers_flow(params)(params)
        built = {r.customer_id: r.version for r in results if r.ok}
        if built:
            promote(params, list(built), built)
        write_json(params.resolve("artifacts/adapt_metrics.json"), {r.customer_id: r.metrics for r in results})
    else:
        generate(params)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
