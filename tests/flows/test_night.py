"""The nightly batch planned from what changed, on the embedded profile (SQLite registry and
index, Prefect's test API): every customer due is drawn once as a shard beside its contact sheet,
gallery and manifest, and recorded in MLflow; a night with nothing changed draws nothing; a
promotion, a rollback or a customer's own cadence decide who is due; `metagan doctor` repairs an
index that disagrees with the registry, and a lost index is rebuilt from it."""

import json

import pytest
import torch

from flows.app.cli import main
from flows.generate import generate
from metagan import model_versions, store, tracking
from metagan.lifecycle import production_moves, promotion
from metagan import model_names
from metagan.config import GateConfig, Params
from metagan.fleet_index import registry_index
from metagan.shards import read_shard

CUSTOMERS = [f"c{i}" for i in range(6)]
GATE = GateConfig(max_coverage_regression=1.0)
TAGS = {"parity_ok": "true", "shot_coverage": "0.2"}

pytestmark = pytest.mark.usefixtures("prefect_harness", "clean_process")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    from metagan.export import export_generator_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    torch.manual_seed(0)
    return export_generator_onnx(SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)), torch.randn(8)),
                                 tmp_path_factory.mktemp("model") / "g.onnx")


@pytest.fixture
def fleet(tmp_path, monkeypatch, onnx_file):
    """Six customers in production (promoted, so the fleet index knows them), one model file
    logged once and registered for each, and the params of a project writing under tmp_path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    monkeypatch.setenv("METAGAN_PROJECT", str(tmp_path))
    tracking.create_store()
    with tracking.start_run("models", {}) as run:
        first = model_versions.log_onnx_model(onnx_file, model_names.customer_model_name("c0"), TAGS)
    model_versions.set_alias(model_names.customer_model_name("c0"), model_names.CANDIDATE, first.version)
    for cid in CUSTOMERS[1:]:
        candidate(cid, first, run.info.run_id)
    results = promotion.promote_all(GATE)
    assert {r.outcome for r in results} == {promotion.Promotion.PROMOTED}
    (tmp_path / "params.yaml").write_text("paths:\n  generated: out\n")
    return tmp_path, Params().with_overrides(paths={"generated": str(tmp_path / "out")}), (first, run.info.run_id)


def candidate(cid: str, logged, run_id: str) -> str:
    """A new version of ``cid`` from the logged model's file, as its candidate."""
    mv = model_versions.register_version(model_names.customer_model_name(cid), logged.source, run_id, dict(logged.tags),
                                   model_id=logged.source.removeprefix("models:/"))
    model_versions.set_alias(model_names.customer_model_name(cid), model_names.CANDIDATE, mv.version)
    return str(mv.version)


def drawn(batches) -> list[str]:
    assert all(b.ok for b in batches), [b.error for b in batches if not b.ok]
    return sorted(b.customer_id for b in batches)


def test_the_night_draws_each_customer_due_once_as_a_shard_and_records_it(fleet):
    root, params, _ = fleet
    batches = generate(params, count=5, seed=2)
    assert drawn(batches) == CUSTOMERS
    folder = root / "out" / "c3"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["layout"] == "shard" and manifest["shard"] == "images.tar" and manifest["count"] == 5
    assert sorted(p.name for p in folder.iterdir()) == ["contact-sheet.png", "images.tar", "index.html",
                                                        "manifest.json"]
    samples = read_shard((folder / "images.tar").read_bytes())
    assert [k for k, _, _ in samples] == ["00000", "00001", "00002", "00003", "00004"]
    assert all(png.startswith(b"\x89PNG") and meta["version"] == manifest["model"]["version"]
               for _, png, meta in samples)
    assert b"data:image/png;base64," in (folder / "index.html").read_bytes()  # the gallery shows the shard's images
    prod = model_versions.get_alias(model_names.customer_model_name("c3"), model_names.PRODUCTION)
    assert prod.tags["last_batch"] == str(folder / "manifest.json") and prod.tags["last_batch_created"]
    runs = store.client().search_runs([tracking.experiment_id()], "tags.step = 'generate'")
    assert sum(r.data.metrics["customers"] for r in runs) == len(CUSTOMERS)  # one run per task, every batch in one
    # the same night again, or any night before the customers' turn comes round: nothing to do
    assert generate(params, count=5) == []


def test_a_promotion_or_a_rollback_makes_only_that_customer_due(fleet, capsys):
    root, params, (logged, run_id) = fleet
    generate(params, count=2)
    candidate("c1", logged, run_id)
    promotion.promote_all(GATE, ["c1"])
    assert drawn(generate(params, count=2)) == ["c1"]
    production_moves.rollback("c1")
    # version 1 had a batch, but version 2's came after it: doctor must not repair c1 to "drawn"
    # (it did, and the night left version 2's images in the folder of a version 1 customer)
    assert main(["--project", str(root), "doctor"]) == 0
    assert "agrees with the registry" in capsys.readouterr().out
    assert drawn(generate(params, count=2)) == ["c1"]  # production is version 1 again: drawn from it again
    assert generate(params, count=2) == []


def test_a_customer_can_have_its_batch_only_when_its_model_changes(fleet, capsys):
    root, params, (logged, run_id) = fleet
    assert main(["--project", str(root), "schedule", "--customer", "c2", "--every", "never"]) == 0
    assert "only when its model changes" in capsys.readouterr().out
    model = store.client().get_registered_model(model_names.customer_model_name("c2"))
    assert model.tags["batch_every_hours"] == "0.0"  # the registry keeps the setting
    generate(params, count=2)
    assert registry_index().row("c2").due_at is None and registry_index().row("c0").due_at is not None
    candidate("c2", logged, run_id)
    promotion.promote_all(GATE, ["c2"])
    assert drawn(generate(params, count=2)) == ["c2"]


def test_generate_all_runs_the_night_once_from_the_command_line(fleet, capsys):
    root, _, _ = fleet
    assert main(["--project", str(root), "generate", "--all", "--count", "3", "--format", "png"]) == 0
    assert "6 customer(s) due: 6 batch(es) drawn" in capsys.readouterr().out
    assert len(list((root / "out" / "c4").glob("0*.png"))) == 3  # loose PNGs stay an option
    assert main(["--project", str(root), "generate", "--all"]) == 0
    assert "0 customer(s) due" in capsys.readouterr().out


def test_a_night_that_drew_nothing_because_a_service_was_down_exits_with_that_kind_not_partial(
        fleet, capsys, monkeypatch):
    """Guarantee: `generate --all` where every customer due failed the same way (MLflow, S3 or the
    database down all night) exits with that failure's code (4: unavailable), saying no batch was
    drawn; some drawn, or failures of different kinds, stay partial (1); the next night, the
    service back, draws them all (0). Until a probe of 2026-12-06 a night that drew nothing with
    MLflow down exited 1, "partial", as if the others had been done."""
    from metagan.lifecycle import batches as fleet_module
    from metagan.retry import ServiceUnavailable

    root, _, _ = fleet
    served = fleet_module._served

    def down(only=None):
        def fake(item):
            if only is None or item.customer_id in only:
                raise ServiceUnavailable("MLflow (http://mlflow.internal:5000) unavailable: get alias failed 5 time(s)")
            return served(item)
        return fake

    monkeypatch.setattr(fleet_module, "_served", down())
    assert main(["--project", str(root), "generate", "--all", "--count", "2"]) == 4
    captured = capsys.readouterr()
    assert "6 customer(s) due: 0 batch(es) drawn" in captured.out
    assert "no batch drawn: every customer due failed (service unavailable)" in captured.err
    monkeypatch.setattr(fleet_module, "_served", down(only={"c0"}))
    assert main(["--project", str(root), "generate", "--all", "--count", "2"]) == 1
    captured = capsys.readouterr()
    assert "5 batch(es) drawn" in captured.out
    # said once, in the FAILED line (a probe of 2026-12-07 found a log line saying it first)
    assert captured.err.count("c0") == 1 and "FAILED c0: MLflow" in captured.err, captured.err
    monkeypatch.setattr(fleet_module, "_served", served)
    assert main(["--project", str(root), "generate", "--all", "--count", "2"]) == 0
    assert "1 customer(s) due: 1 batch(es) drawn" in capsys.readouterr().out
    # the scheduled night (deployment `nightly-generate`) ends Failed, not "Completed", naming why
    from flows.serve import nightly_generate

    monkeypatch.setattr(fleet_module, "_served", down(only={"c3"}))
    state = nightly_generate(str(root / "params.yaml"), 2, ["c3", "c4"], return_state=True)
    assert state.is_failed() and state.message.startswith("1 of 2 customer(s) due failed") \
        and "c3: MLflow (http://mlflow.internal:5000) unavailable" in state.message, state
    monkeypatch.setattr(fleet_module, "_served", served)
    state = nightly_generate(str(root / "params.yaml"), 2, ["c3"], return_state=True)
    assert state.is_completed() and state.result() == 1


def test_doctor_repairs_an_index_that_disagrees_with_the_registry_and_a_lost_one_is_rebuilt(fleet, capsys):
    """Guarantee: the registry is the truth. Rows missing, wrong or left over are rewritten from it
    by `metagan doctor` (a customer the registry lost has its uploads adapted again); an index lost altogether is rebuilt before the next plan, and customers
    already drawn from their production version are not drawn again."""
    from dataclasses import replace

    root, params, _ = fleet
    generate(params, count=2, customers=["c0", "c1", "c2"])  # drawn: recorded in the registry and the index
    index = registry_index()
    rows = index.rows()
    index.delete(["c0"])
    index.put([replace(rows["c1"], production_version="7"), replace(rows["c2"], batch_version=None),
               replace(rows["c3"], customer_id="gone", uploads_hash="h-gone", adapted_hash="h-gone")])
    assert main(["--project", str(root), "doctor"]) == 0
    out = capsys.readouterr().out
    for cid, why in (("c0", "missing from the index"), ("c1", "production_version"), ("c2", "drawn"),
                     ("gone", "not in the registry")):
        assert f"repaired {cid} in the fleet index: " in out and why in out, out
    assert "4 row(s) repaired" in out
    # registered after a registry's backup, then the backup restored: its uploads are pending again
    assert registry_index().row("gone").adapted_hash is None and "gone" in registry_index().pending_adaptation()
    assert main(["--project", str(root), "doctor"]) == 0
    assert "agrees with the registry" in capsys.readouterr().out
    assert drawn(generate(params, count=2)) == ["c3", "c4", "c5"]  # c0-c2 were drawn: the registry says so

    (root / "mlflow" / "fleet.db").unlink()  # lost: rebuilt from the registry at the next plan
    registry_index().close()
    assert generate(params, count=2) == []


def test_a_damaged_index_is_moved_aside_and_rebuilt_and_no_command_stops_on_it(fleet, capsys):
    """Guarantee: an index file truncated or overwritten (`truncate -s 9000 mlflow/fleet.db` made
    `doctor`, `adapt`, `generate --all` and `schedule` exit 70 with SQLite's "malformed") is moved
    aside with a warning and rebuilt from the registry: `doctor` says so and repairs every row,
    `schedule` and `generate --all` go on, and nothing the registry says was drawn is drawn again."""
    import os
    import sqlite3
    from contextlib import closing

    root, params, _ = fleet
    path = root / "mlflow" / "fleet.db"
    generate(params, count=2, customers=["c0", "c1", "c2"])

    def damage(how) -> None:
        with closing(sqlite3.connect(path)) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        how()

    damage(lambda: os.truncate(path, 9000))
    assert main(["--project", str(root), "doctor"]) == 0
    out = capsys.readouterr().out
    assert f"the fleet index {path} was damaged: moved aside to {path}.damaged-" in out, out
    assert "6 row(s) repaired from the registry" in out
    assert drawn(generate(params, count=2)) == ["c3", "c4", "c5"]

    damage(lambda: path.write_bytes(b"not a database " * 600))
    assert main(["--project", str(root), "schedule", "--customer", "c0", "--every", "7d"]) == 0
    assert generate(params, count=2) == []  # rebuilt at the plan: every customer drawn, the registry says
    assert len(list(path.parent.glob("fleet.db.damaged-*"))) >= 2


def test_a_customer_an_overlapping_run_drew_since_the_night_began_is_not_drawn_twice(fleet):
    """Two runs of the same night (the schedule's and one by hand): each task reads its customers'
    rows when it starts, and leaves out those whose production version was drawn since the night
    began; the next night draws them as usual."""
    from metagan.lifecycle import batches as night
    from metagan.lifecycle.fleet import plan_night

    _, params, _ = fleet
    plan = plan_night(params)
    assert sorted(plan.due) == CUSTOMERS
    version = registry_index().due_batches(["c1"])[0].version
    registry_index().batches_done([("c1", version, plan.started, plan.started + 86400)])  # the other run's
    batches = night.draw_batches(plan.due, True, 2, str(params.resolve(params.paths.generated)), 0, "png",
                                 plan.started, 86400)
    assert drawn(batches) == sorted(set(CUSTOMERS) - {"c1"})
    assert generate(params, count=2) == []  # all drawn: nothing is due until their turn comes round


def test_a_rollback_while_the_night_draws_a_customer_makes_it_draw_the_version_rolled_back_to(fleet, monkeypatch):
    """The night loads the version its plan named, and an operator rolls that customer back before
    the batch is written: the batch written is the version production serves now, not the one
    taken out (which the night wrote over the customer's good batch until 2026-12-07), and it
    counts: the customer is not due again."""
    from metagan.lifecycle import batches as night

    root, params, (logged, run_id) = fleet
    generate(params, count=2)
    candidate("c1", logged, run_id)
    promotion.promote_all(GATE, ["c1"])  # c1: version 2 in production, due
    served, rolled = night._served, []

    def served_then_rolled_back(item):
        model = served(item)
        if item.customer_id == "c1" and not rolled:
            rolled.append(production_moves.rollback("c1"))  # the operator, while the night draws c1
        return model

    monkeypatch.setattr(night, "_served", served_then_rolled_back)
    batches = generate(params, count=2)
    assert rolled and drawn(batches) == ["c1"]
    manifest = json.loads((root / "out" / "c1" / "manifest.json").read_text())
    assert manifest["model"]["version"] == "1" and batches[0].version == "1"
    assert generate(params, count=2) == []  # version 1's batch counted: nothing due


def test_a_rollback_landing_as_the_batch_publishes_is_followed_the_same_night(fleet, monkeypatch):
    """The move lands after the batch's last check inside its write, as its manifest goes out: the
    batch is asked once more after publishing and drawn again from the version production serves
    now, the same night (until 2026-12-07 the rolled-back version's batch stayed until the
    customer's next turn, a known limit)."""
    from metagan.lifecycle import batches as night

    root, params, (logged, run_id) = fleet
    generate(params, count=2)
    candidate("c1", logged, run_id)
    promotion.promote_all(GATE, ["c1"])  # c1: version 2 in production, due
    still, rolled = night._still_production, []

    def rolled_back_after_the_last_check(customer_id, version):
        check, calls = still(customer_id, version), []

        def asked() -> bool:
            calls.append(1)
            answer = check()
            if customer_id == "c1" and len(calls) == 2 and not rolled:
                rolled.append(production_moves.rollback("c1"))  # after the check before the manifest
            return answer
        return asked

    monkeypatch.setattr(night, "_still_production", rolled_back_after_the_last_check)
    batches = generate(params, count=2)
    assert rolled and drawn(batches) == ["c1"] and batches[0].version == "1"
    assert json.loads((root / "out" / "c1" / "manifest.json").read_text())["model"]["version"] == "1"
    assert generate(params, count=2) == []  # version 1's batch counted: nothing due
