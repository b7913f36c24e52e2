"""`metagan doctor`'s repair of the fleet index (metagan.lifecycle.fleet_repair) against runs killed
or running beside it, on a real MLflow registry (SQLite) and its embedded index: what doctor
rewrites must be what the registry says *now*, and must leave the work the runs still owe pending."""

import pytest

from metagan import model_names, model_versions
from metagan.config import GateConfig
from metagan.fleet_index import FleetIndex, registry_index
from metagan.lifecycle import fleet_repair, production_moves, promotion
from metagan.lifecycle.fleet_repair import repair_index
from metagan.lifecycle.promotion import Promotion
from tests.test_registry import Killed, KilledAtWrite, onnx_model, register, store  # noqa: F401 (fixtures)

GATE = GateConfig()
DAY = 24 * 3600


def aliases(cid: str) -> dict[str, str]:
    name = model_names.customer_model_name(cid)
    return {a: str(v.version) for a in (model_names.PRODUCTION, model_names.PREVIOUS, model_names.CANDIDATE)
            if (v := model_versions.get_alias(name, a)) is not None}


def in_production(cid: str, logged, shots: str) -> str:
    """A version adapted from ``shots`` (ingested first, as an hour does), registered and promoted."""
    registry_index().uploads_ingested([(cid, f"sig-{shots}", shots)])
    version = register(cid, logged, {"content_hash": shots}, alias=model_names.CANDIDATE)
    assert promotion.promote(cid, GATE, version=version).outcome is Promotion.PROMOTED
    return version


def test_doctor_after_a_promotion_killed_past_the_gates_tag_leaves_the_candidate_to_the_next_hour(onnx_model,
                                                                                                 monkeypatch):
    """Guarantee: an hour killed while promoting, after the gate's verdict was written on the
    candidate and before `production` moved, leaves the customer's new uploads pending, and
    `metagan doctor` in between keeps them pending (the index agrees), so the next hour finds the
    candidate again and promotes it. Before, doctor took the gate's tag for a decided promotion,
    "repaired" the index's adapted uploads to the candidate's and cleared the pending work: the
    candidate was never promoted (probe of 2026-12-07: `hebrew-03` v2 stayed a candidate through
    the next hours, doctor saying the index agreed)."""
    index = registry_index()
    repair_index(index, DAY)  # the index knows the fixture's own model
    v1 = in_production("acme", onnx_model, "h1")
    index.uploads_ingested([("acme", "sig-h2", "h2")])  # new uploads: the hour adapts them
    v2 = register("acme", onnx_model, {"content_hash": "h2"}, alias=model_names.CANDIDATE)
    with monkeypatch.context() as m:
        KilledAtWrite(m, 1)  # the gate's tag is written; the move's record, `previous`, `production` are not
        with pytest.raises(Killed):
            promotion.promote("acme", GATE, version=v2)
    name = model_names.customer_model_name("acme")
    assert model_versions.get_version(name, v2).tags["gate"] == "passed"
    assert aliases("acme") == {"production": v1, "candidate": v2}
    assert index.pending_adaptation() == ["acme"]

    repair = repair_index(index, DAY)  # metagan doctor
    assert repair.agreed, repair.repaired
    assert index.pending_adaptation() == ["acme"] and index.row("acme").adapted_hash == "h1"

    # the next hour: the same uploads find the same version (reused), which its promotion moves
    assert promotion.promote("acme", GATE, version=v2).outcome is Promotion.PROMOTED
    assert aliases("acme") == {"production": v2, "previous": v1, "candidate": v2}
    assert index.pending_adaptation() == [] and repair_index(index, DAY).agreed


@pytest.mark.parametrize("event", ["rollback", "promotion", "ingestion"])
def test_doctor_beside_a_run_never_writes_back_what_the_run_changed(onnx_model, monkeypatch, event):
    """Guarantee: `metagan doctor` repairing the index while a run records an event for the same
    customer (a rollback or promotion landing between doctor's reads of the index and the registry;
    an ingestion landing between its reads and its write) leaves the index as the registry says
    after the event, and the event's own facts (new uploads pending) kept. Before, doctor read the
    registry, then the index, and wrote whole rows: a rollback between the reads was undone in the
    index, which went on naming the version rolled back, so the night drew it and not the version
    production serves (probe of 2026-12-07: after doctor beside `metagan rollback`, the index said
    production v2, the registry v1, `generate --all` drew nothing, and the served batch stayed v2's);
    new uploads ingested before its write were wiped from the row, the customer no longer pending."""
    from metagan.cadence import EVERY_TAG

    index = registry_index()
    repair_index(index, DAY)  # the index knows the fixture's own model
    name = model_names.customer_model_name("acme")
    v1 = in_production("acme", onnx_model, "h1")
    v2 = in_production("acme", onnx_model, "h2")
    v3 = register("acme", onnx_model, {"content_hash": "h2"}, alias=model_names.CANDIDATE)  # an hour's candidate
    # a row doctor rewrites anyway: the customer's own cadence, set in the registry, not in the index
    model_versions.set_model_tag(name, EVERY_TAG, repr(12.0))
    events = {"rollback": lambda: production_moves.rollback("acme"),
              "promotion": lambda: promotion.promote("acme", GATE, version=v3),
              "ingestion": lambda: index.uploads_ingested([("acme", "sig-h4", "h4")])}
    happened = []

    def then_the_event(real):
        def call(*args, **kwargs):
            if event == "ingestion" and real.__name__ in ("put", "repair") and not happened:
                happened.append(events[event]())  # after both reads, before the write
            found = real(*args, **kwargs)
            if event != "ingestion" and real.__name__ in ("rows", "expected_rows") and not happened:
                happened.append(events[event]())  # between the two reads, whichever comes first
            return found
        return call

    with monkeypatch.context() as m:
        m.setattr(fleet_repair, "expected_rows", then_the_event(fleet_repair.expected_rows))
        for method in ("rows", "put", "repair"):
            if hasattr(FleetIndex, method):
                m.setattr(FleetIndex, method, then_the_event(getattr(FleetIndex, method)))
        repair_index(index, DAY)  # metagan doctor
    assert happened

    production = {"rollback": v1, "promotion": v3, "ingestion": v2}[event]
    assert aliases("acme")["production"] == production
    row = index.row("acme")
    assert row.production_version == production, "the index names another version than production"
    assert row.every_s == 12 * 3600
    if event == "ingestion":
        assert row.uploads_hash == "h4" and index.pending_adaptation() == ["acme"]
    assert repair_index(index, DAY).agreed
    # the night plans from the index: the customer is due, and for the version production names
    assert "acme" in index.due(row.due_at or 0.0) and index.due_batches(["acme"])[0].version == production
