"""``metagan generate`` (one customer's batch, or the night's with ``--all``) and ``metagan schedule``.
One customer's batch imports neither torch, MLflow nor Prefect: it starts in a quarter of a second."""

from __future__ import annotations

import sys
from pathlib import Path

from metagan.addresses import is_s3
from metagan.config import Params
from metagan.errors import ExitCode


def cmd_generate(args, params: Params) -> int:
    """The batch job for one customer, without Prefect or MLflow: the registry is read directly,
    the images drawn with onnxruntime (about a second in all, docs/BENCHMARKS.md). With ``--all``:
    the nightly batch job once, planned as the schedule plans it (the customers due)."""
    if args.all:
        return _generate_all(args, params)
    from flows import progress
    from flows.locks import customer_locker
    from metagan import model_names, serving
    from metagan.generate import preview_folder, run_batch_job
    from metagan.uploads import validate_customer_id

    # previews (a file, another alias, a version number) go beside the customers' batches, under a
    # name no customer can have: a file named after a customer, or a customer named like another's
    # preview (`acme-local`, `acme-candidate`), wrote over that customer's batch
    if args.model is not None:
        model = serving.local_model(args.model)
        folder = preview_folder(model.name, "local")
    else:
        customer = validate_customer_id(args.customer)
        model = serving.served_model(customer, args.alias or model_names.PRODUCTION, args.version)
        folder = customer if model.alias == model_names.PRODUCTION else \
            preview_folder(customer, model.alias or f"v{model.version}")
    count = params.schedules.generate_count if args.count is None else args.count
    out = args.out or params.paths.generated
    out = out if is_s3(out) else str(Path(out).resolve() if args.out else params.resolve(out))
    done = progress.counter("generating", count)
    manifest = run_batch_job(model.onnx, count, f"{out.rstrip('/')}/{folder}", args.seed, model.describe(),
                             progress=done, layout=args.format or "png",
                             lock=None if args.model is not None else customer_locker(params))
    served = f"the local file {args.model}" if args.model is not None else \
        f"{model.name} v{model.version}" + (f" ({model.alias})" if model.alias else "")
    images = f"shard {manifest['shard']}, " if manifest.get("shard") else ""
    print(f"wrote {manifest['count']} images of {served} to {manifest['location']} "
          f"({images}contact sheet {manifest['contact_sheet']}, gallery {manifest['gallery']})")
    return ExitCode.OK


def _generate_all(args, params: Params) -> int:
    from flows.generate import generate_flow

    out = args.out if args.out is None or is_s3(args.out) else str(Path(args.out).resolve())
    batches = generate_flow(params)(params, count=args.count, seed=args.seed, out=out, layout=args.format)
    failed = [b for b in batches if not b.ok]
    where = batches[0].location.rsplit("/", 1)[0] if batches and batches[0].ok else out or params.paths.generated
    print(f"{len(batches)} customer(s) due: {len(batches) - len(failed)} batch(es) drawn into {where}"
          + (f", {len(failed)} failed" if failed else ""))
    for b in failed:
        print(f"  FAILED {b.customer_id}: {b.error}", file=sys.stderr)
    return _night_exit_code(batches)


def _night_exit_code(batches) -> int:
    """0 all drawn; 1 partial (some drawn, or customers failing for different reasons); when no
    batch was drawn and every customer failed the same way (MLflow, S3 or the database down all
    night, a bucket missing), that kind's code: a night that did nothing is no partial success."""
    from metagan.errors import Failure

    failed = [b for b in batches if not b.ok]
    if not failed:
        return ExitCode.OK
    kinds = {b.failure for b in failed}
    if len(failed) == len(batches) and kinds == {""}:  # a bug, the same for every customer: no partial (a probe)
        print("no batch drawn: every customer due failed with a bug (`-v` shows its traceback)", file=sys.stderr)
        return ExitCode.INTERNAL
    if len(failed) == len(batches) and len(kinds) == 1 and next(iter(kinds)) in Failure.__members__:
        kind = Failure[next(iter(kinds))]
        print(f"no batch drawn: every customer due failed ({kind.value})", file=sys.stderr)
        return kind.exit_code
    return ExitCode.PARTIAL


def cmd_schedule(args, params: Params) -> int:
    from metagan.lifecycle import fleet
    from metagan.uploads import validate_customer_id

    customer = validate_customer_id(args.customer)
    # argparse (3.11) hands `--every=--` over as a list: a value nobody can mean
    hours = fleet.parse_every(args.every if isinstance(args.every, str) else "--")
    fleet.set_schedule(customer, hours, params)
    said = "at the default cadence (fleet.batch_every_hours)" if hours is None \
        else "only when its model changes" if hours == 0 else f"every {hours:g} h"
    print(f"{customer}: a batch {said}")
    return ExitCode.OK
