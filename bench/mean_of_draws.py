"""The mean of several draws of ``bench/quality.py``: the same run (rows, split, shots, seeds) with
another ``--draw-seed`` each, averaged, with the per-character comparisons recomputed on the
averaged characters.

    python bench/mean_of_draws.py A.json B.json [C.json ...] --report MEAN.json

One draw of 96 images a character moves the figures by about as much as the differences being
decided (docs/BENCHMARKS.md, "Sixth session"), and the from-scratch classifier, which trains on as
many generated images as there are new real drawings, moves more; the per-character bootstrap
intervals of one report resample characters, not draws. The mean of the draws is the figure; each
draw's classifier gains are kept beside it (``classifier_draws``) to show their spread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from quality import against, print_tables  # noqa: E402

SAME = ("split", "shots", "samples", "image_size", "classifier_steps", "classifier_folds", "adapt_steps",
        "evaluator_steps", "classes", "seed")
"""What must agree between the draws averaged (the characters, their shots, the images' number)."""
REFERENCE_ROWS = ("copy the shots", "new real drawings")
"""Rows no draw changes: equal figures in every report say the evaluators were the same."""


def row_specs(args: dict) -> dict[str, str]:
    """Each generated row's definition in one report (its name: what made it)."""
    specs = {}
    for option in ("checkpoint", "classic", "mix", "pairs", "codes"):
        for text in args.get(option) or []:
            name, _, rest = text.partition("=")
            specs[name] = f"{option}={rest}"
    for s in filter(None, str(args.get("bank") or "").split(",")):
        specs[f"bank x{s}"] = f"bank={s} crisp={args.get('bank_crisp')}"
    return specs


def check_same_run(reports: list[dict], evaluators: bool = True) -> None:
    """The reports are draws of one run: same characters and shots, the rows they share made the
    same way, the evaluators the same (unless ``evaluators`` is False), each draw once. Rows only
    some reports have are left out."""
    first = reports[0]["args"]
    for r in reports[1:]:
        differ = [k for k in SAME if r["args"].get(k) != first.get(k)]
        if differ:
            raise SystemExit(f"not draws of one run: {', '.join(differ)} differ")
        a, b = row_specs(first), row_specs(r["args"])
        differ = [n for n in set(a) & set(b) if a[n] != b[n]]
        if differ:
            raise SystemExit(f"rows of one name made differently: {', '.join(sorted(differ))}")
        for ev, by_k in (reports[0]["results"] if evaluators else {}).items():
            for k, rows in by_k.items():
                for name in REFERENCE_ROWS:
                    mine, theirs = rows.get(name, {}), r["results"].get(ev, {}).get(k, {}).get(name, {})
                    if mine.get("kid") != theirs.get("kid"):
                        raise SystemExit(f"{ev} scores '{name}' differently at {k}: not the same evaluator")
                    if mine.get("aug_gain_folds") != theirs.get("aug_gain_folds"):
                        raise SystemExit(f"{ev}'s augmentation gains at {k} were averaged over different query folds")
    seeds = [r["args"].get("draw_seed", 0) for r in reports]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"the same draw twice: draw seeds {seeds}")


def _mean(values: list):
    """The mean of numbers, or of equally long lists of numbers (per character)."""
    if isinstance(values[0], list):
        return np.mean(np.array(values, dtype=float), axis=0).tolist()
    return float(np.mean(values))


def _common_rows(tables: list[dict]) -> list[str]:
    return [name for name in tables[0] if all(name in t for t in tables[1:])]


def mean_results(tables: list[dict]) -> dict:
    """One evaluator's one K: each row present in every draw, its figures averaged."""
    out = {}
    for name in _common_rows(tables):
        rows = [t[name] for t in tables]
        row = {k: _mean([r[k] for r in rows]) for k, v in rows[0].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "per_class" in rows[0]:
            row["per_class"] = {m: _mean([r["per_class"][m] for r in rows]) for m in rows[0]["per_class"]}
        out[name] = row
    return out


def mean_of_draws(reports: list[dict], classifier_only: bool = False) -> dict:
    """The mean of the draws; ``classifier_only``: of the from-scratch classifier's figures alone,
    which no evaluator enters (for draws scored by evaluators trained apart, which differ: an
    evaluator retrained with another number of threads is another evaluator)."""
    check_same_run(reports, evaluators=not classifier_only)
    first = reports[0]
    out = {k: first[k] for k in ("machine", "held_out", "held_out_classes", "meta_steps") if k in first}
    out |= {"draw_seeds": [r["args"].get("draw_seed", 0) for r in reports], "dates": [r["date"] for r in reports],
            "args": first["args"] | {"draw_seed": None}, "results": {}, "classifier": {}, "classifier_draws": {},
            "gate": {}, "against": {}}
    reference = first["args"].get("against")
    for ev, by_k in ({} if classifier_only else first["results"]).items():
        for k in by_k:
            res = mean_results([r["results"][ev][k] for r in reports])
            out["results"].setdefault(ev, {})[k] = res
            if reference in res:
                out["against"].setdefault(ev, {})[k] = against(
                    res, reference, set(first.get("against", {}).get(ev, {}).get(k, {})))
    for k in first.get("classifier", {}):
        tables = [r["classifier"][k] for r in reports]
        out["classifier"][k] = mean_results(tables)
        out["classifier_draws"][k] = {name: [t[name].get("classifier_gain") for t in tables]
                                      for name in _common_rows(tables)}
    for k in first.get("gate", {}):
        tables = [r["gate"].get(k, {}) for r in reports]
        out["gate"][k] = {name: {"pass_share": _mean([t[name]["pass_share"] for t in tables])}
                          for name in _common_rows(tables)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--report", type=Path, help="where to write the mean (same layout as one report)")
    ap.add_argument("--classifier-only", action="store_true",
                    help="average the classifier's figures only (draws scored by different evaluators)")
    args = ap.parse_args()
    if len(args.reports) < 2:
        raise SystemExit("give two or more reports of one run")
    mean = mean_of_draws([json.loads(p.read_text()) for p in args.reports], args.classifier_only)
    mean["reports"] = [str(p) for p in args.reports]
    if args.report:
        args.report.write_text(json.dumps(mean, indent=2) + "\n")
    print_tables(mean)
    reference = mean["args"].get("against")
    for k, rows in mean["classifier_draws"].items():
        print(f"{k} classifier gain by draw: " + "; ".join(
            f"{name} " + " ".join(f"{g:+.3f}" for g in gains if g is not None) for name, gains in rows.items()))
        gains = {name: r["classifier_gain"] for name, r in mean["classifier"][k].items() if "classifier_gain" in r}
        if reference in gains and "new real drawings" in gains:
            span = gains["new real drawings"] - gains[reference]
            print(f"{k} classifier gain, mean of {len(mean['draw_seeds'])} draws: " + "; ".join(
                f"{name} {g:+.3f}" + (f" ({(g - gains[reference]) / span:.0%} of the way from {reference} to new"
                                      " real drawings)" if span > 0 and name not in (reference, *REFERENCE_ROWS)
                                      else "") for name, g in gains.items()))


if __name__ == "__main__":
    main()
