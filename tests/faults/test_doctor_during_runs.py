"""`metagan doctor`'s repair of the fleet index (metagan.lifecycle.fleet_repair) against runs killed
or running beside it, on a real MLflow registry (SQLite) and its embedded index: what doctor
rewrites must be what the registry says *now*, and must leave the work the runs still owe pending."""

import pytest

from metagan import model_names, model_versions
from metagan.config import GateConfig
from metagan.fleet_index import registry_index
from metagan.lifecycle import registry
from metagan.lifecycle.fleet_repair import repair_index
from metagan.lifecycle.registry import Promotion
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
    assert registry.promote(cid, GATE, version=version).outcome is Promotion.PROMOTED
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
            registry.promote("acme", GATE, version=v2)
    name = model_names.customer_model_name("acme")
    assert model_versions.get_version(name, v2).tags["gate"] == "passed"
    assert aliases("acme") == {"production": v1, "candidate": v2}
    assert index.pending_adaptation() == ["acme"]

    repair = repair_index(index, DAY)  # metagan doctor
    assert repair.agreed, repair.repaired
    assert index.pending_adaptation() == ["acme"] and index.row("acme").adapted_hash == "h1"

    # the next hour: the same uploads find the same version (reused), which its promotion moves
    assert registry.promote("acme", GATE, version=v2).outcome is Promotion.PROMOTED
    assert aliases("acme") == {"production": v2, "previous": v1, "candidate": v2}
    assert index.pending_adaptation() == [] and repair_index(index, DAY).agreed

