"""The registry's commands: ``metagan promote``, ``rollback``, ``models`` and ``doctor``."""

from __future__ import annotations

import json

from metagan.config import Params
from metagan.errors import ExitCode, NotFound


def cmd_promote(args, params: Params) -> int:
    from flows.promote import promote
    from metagan.lifecycle.promotion import Promotion
    from metagan.uploads import validate_customer_id

    customers = [validate_customer_id(args.customer)] if args.customer else None
    results = promote(params, customers)
    for r in results:
        print(f"  {r.customer_id}: {r.outcome.value}" + (f" ({r.reason})" if r.reasons else ""))
    if customers and results[0].outcome is Promotion.NO_CANDIDATE:
        raise NotFound(f"customer {args.customer!r} has no candidate model to promote")
    return ExitCode.PARTIAL if any(r.outcome is Promotion.REFUSED for r in results) else ExitCode.OK


def cmd_rollback(args, params: Params) -> int:
    from flows.promote import rollback
    from metagan.uploads import validate_customer_id

    customer = validate_customer_id(args.customer)
    expected = None if args.from_version is None else str(args.from_version)
    print(rollback(params, customer, expected).describe(customer))
    return ExitCode.OK


def cmd_models(args, params: Params) -> int:
    from metagan.lifecycle.listings import model_rows

    rows = model_rows()
    if args.json:
        print(json.dumps([{"model": r.name, "kind": r.kind, "customer_id": r.customer_id, "versions": r.versions,
                           "aliases": r.aliases, "metrics_of": {"version": r.metrics_of, "from": r.metrics_from},
                           "metrics": r.metrics, "held_back": r.held_back,
                           "refused": {"version": r.refused[0], "reason": r.refused[1]} if r.refused else None}
                          for r in rows], indent=2))
    else:
        print(models_table(rows))
    return ExitCode.OK


def cmd_doctor(args, params: Params) -> int:
    """The registry's health (metagan.lifecycle.health): exit 5 when the store, a customer's production,
    candidate or previous model, or the current meta-model's or evaluator's file is damaged; a promotion
    or rollback cut short between its alias writes finished; the fleet index checked against the
    registry, and the rows that disagree rewritten; a warning (no change to the exit code) naming the
    lines `metagan init` writes into .gitignore that the project's lacks."""
    from metagan.lifecycle.fleet import default_every_s
    from metagan.fleet_index import registry_index
    from metagan.lifecycle.fleet_repair import repair_index
    from flows.locks import customer_locker
    from metagan.lifecycle.health import check_registry
    from metagan.lifecycle.production_moves import finish_cut_short_moves

    health = check_registry(params)
    for check in [*health.versions, *health.files]:
        print(check.describe())
    print(f"{health.store}: {len(health.versions)} customer version(s) (production, candidate, previous) and "
          f"{len(health.files)} meta-model or evaluator file(s) checked, {len(health.damaged)} damaged")
    for move in finish_cut_short_moves(customer_locker(params)):  # before the index, which follows production
        print(move.describe())
    index = registry_index()
    repair = repair_index(index, default_every_s(params))
    for damaged, aside in index.set_aside:
        print(f"the fleet index {damaged} was damaged: moved aside to {aside}, rebuilt from the registry")
    for cid, why in repair.repaired:
        print(f"repaired {cid} in the fleet index: {why}")
    print(f"fleet index {repair.index}: {repair.customers} customer(s), "
          + ("agrees with the registry" if repair.agreed else f"{len(repair.repaired)} row(s) repaired from the registry"))
    cluster_ok = _check_dask_cluster(params)
    _warn_unignored_state()
    return ExitCode.DAMAGED if health.damaged else ExitCode.OK if cluster_ok else ExitCode.UNAVAILABLE


def _check_dask_cluster(params: Params) -> bool:
    """The scale-out profile's Dask scheduler (``scaleout.dask_address``): that it answers and has a
    worker, as a fan-out will need (a walkthrough of docs/DEPLOY.md, 2026-12-07: doctor said all was
    well, and the next night stopped, exit 4, on a scheduler that was not there). Said in a line;
    False when the cluster cannot run a fan-out (doctor exits 4, unless something is damaged). No
    address (the flows start a cluster of their own) or the embedded profile: nothing to check."""
    address = params.scaleout.dask_address if params.profile == "scaleout" else ""
    if not address:
        return True
    from flows.common import DASK_WORKERS_WAIT_ENV, check_scheduler_answers, dask_workers_wait_s, scheduler_workers
    from metagan.errors import Unavailable

    try:
        check_scheduler_answers(address)
        workers = scheduler_workers(address)
    except Unavailable as e:
        print(f"UNAVAILABLE {e}")
        return False
    if workers == 0 and dask_workers_wait_s() > 0:
        print(f"UNAVAILABLE the Dask scheduler {address} has no worker: start them (`dask worker {address} ...`, "
              f"docs/DEPLOY.md); {DASK_WORKERS_WAIT_ENV}=0 for a cluster that starts workers on demand")
        return False
    print(f"ok      the Dask scheduler {address}: {workers} worker(s)")
    return True


def _warn_unignored_state() -> None:
    """A project made before `metagan init` wrote its .gitignore lines (or by `metagan demo` alone:
    init refuses where params.yaml exists) lets `git add .` take the registry and the data. Named,
    not written: the .gitignore is the user's file, and doctor repairs only what metagan owns."""
    from metagan.config import is_project, project_dir
    from metagan.project_gitignore import missing_lines

    root = project_dir()
    # a project with no .gitignore outside any git work tree has nothing for `git add .` to take
    in_git = (root / ".gitignore").exists() or any((d / ".git").exists() for d in (root, *root.parents))
    missing = missing_lines(root) if in_git and is_project(root) else []
    if missing:  # not "run `metagan init`": it refuses where params.yaml exists (an upgrade probe of 2026-12-07)
        print(f"warning: {root / '.gitignore'} lacks lines that keep metagan's state out of git (the registry, "
              f"data, outputs), so `git add .` would take it: add {' '.join(missing)}")


def models_table(rows, width: int = 100) -> str:
    """Customers one a line (aliases, and the key metrics of production, else of the candidate),
    then the meta-model and the evaluator with their ``current`` version; fits ``width`` columns."""
    from metagan.metric_registry import METRICS
    from metagan.model_names import CANDIDATE, CURRENT, PREVIOUS, PRODUCTION

    keys = [m for m in METRICS.values() if m.key]
    customers = [r for r in rows if r.kind == "customer"]
    lines = []
    if customers:
        head = ["customer", "vers", "prod", "cand", "prev", "from", *(m.column or m.name for m in keys)]
        body = [[r.customer_id, str(r.versions), *(r.aliases.get(a, "-") for a in (PRODUCTION, CANDIDATE, PREVIOUS)),
                 {"production": "prod", "candidate": "cand"}.get(r.metrics_from, r.metrics_from or "-"),
                 *(format(r.metrics[m.name], m.fmt) if m.name in r.metrics else "-" for m in keys)] for r in customers]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        # long ids give way first: the id column shrinks (ids cut with "~") until the table fits
        spare = width - (sum(widths) + 2 * (len(widths) - 1))
        if spare < 0:
            widths[0] = max(len(head[0]), widths[0] + spare)
        cut = [[x[0] if len(x[0]) <= widths[0] else x[0][: widths[0] - 1] + "~", *x[1:]] for x in [head, *body]]
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                  for r in cut]
        lines.append("from: whose metrics these are (prod: the production version's, cand: the candidate's)")
        names = [f"{m.column} = {m.name}" for m in keys if m.column]
        lines += ["  " + ", ".join(names[i : i + 3]) for i in range(0, len(names), 3)]
        held = [f"{r.customer_id} v{', v'.join(r.held_back)}" for r in customers if r.held_back]
        if held:
            lines.append(f"held back (rolled back; promoted again only by another rollback): {'; '.join(held)}")
        refused = [r for r in customers if r.refused]
        if refused:
            # the reason adapt printed once: without it here a refused customer's only trace was a tag
            lines.append("refused by the gate (candidates not served; preview one with "
                         "`metagan generate --customer ID --alias candidate`):")
            lines += [f"  {r.customer_id} v{r.refused[0]}: {r.refused[1]}" for r in refused]
    else:
        lines.append("no customer models yet (metagan adapt registers them)")
    for r in rows:
        if r.kind in ("meta", "evaluator"):
            what = "meta-model" if r.kind == "meta" else "evaluator"
            lines.append(f"{what} {r.name}: {r.versions} version(s), {CURRENT} = {r.aliases.get(CURRENT, '-')}")
    return "\n".join(lines)
