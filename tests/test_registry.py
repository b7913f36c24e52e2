"""The lifecycle's rules (metagan.lifecycle.registry) on a real MLflow registry (SQLite): every customer is
listed whatever the number of pages, promotion results are typed, a generate during a promotion
serves one complete version."""

import threading

import pytest
import torch
from mlflow import MlflowClient

from metagan import model_names, model_versions, serving, tracking
from metagan.lifecycle import listings, production_moves, promotion, registry
from metagan.config import GateConfig
from metagan.lifecycle.promotion import Promotion

GOOD_TAGS = {"parity_ok": "true", "parity_max_abs_diff": "1e-06", "shot_coverage": "0.2"}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.experiment_id()
    return tmp_path


@pytest.fixture
def onnx_model(store):
    """One tiny logged ONNX model; versions registered from it (the source) load as real models."""
    from metagan.export import export_generator_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    torch.manual_seed(0)
    path = export_generator_onnx(SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)), torch.randn(8)),
                                 store / "g.onnx")
    with tracking.start_run("models", {}) as run:
        version = model_versions.log_onnx_model(path, model_names.customer_model_name("seed"), {})
    return run.info.run_id, version.source, version.source.removeprefix("models:/")  # the logged model's id


def register(customer: str, logged: tuple[str, str, str], tags: dict | None = None, alias: str | None = None) -> str:
    run_id, source, model_id = logged
    mv = model_versions.register_version(model_names.customer_model_name(customer), source, run_id, GOOD_TAGS | (tags or {}),
                                   model_id=model_id)
    if alias:
        model_versions.set_alias(model_names.customer_model_name(customer), alias, mv.version)
    return str(mv.version)


class Calls:
    """Counts MlflowClient calls by method name."""

    def __init__(self, monkeypatch, *names):
        self.counts = dict.fromkeys(names, 0)
        for name in names:
            real = getattr(MlflowClient, name)

            def spy(client, *a, _real=real, _name=name, **k):
                self.counts[_name] += 1
                return _real(client, *a, **k)

            monkeypatch.setattr(MlflowClient, name, spy)


def test_every_customer_past_the_first_page_is_listed_promoted_and_generated_for(onnx_model, monkeypatch):
    """Guarantee: with more customers than one page of MLflow's listing (100), the listing, the
    nightly generate's customer list, `metagan promote` and `metagan models` see every one; the
    models table comes from two paginated listings, not queries per model."""
    ids = [f"c{i:03d}" for i in range(105)]
    for cid in ids:
        register(cid, onnx_model, alias=model_names.CANDIDATE)
    calls = Calls(monkeypatch, "search_registered_models", "search_model_versions", "get_model_version_by_alias")
    listed = listings.list_customers()
    assert [e.customer_id for e in listed] == sorted(ids + ["seed"])
    assert calls.counts["search_registered_models"] == 2  # 100 + 6 on two pages
    assert listings.customers_in_production() == []

    results = {r.customer_id: r for r in promotion.promote_all(GateConfig())}
    assert {cid: r.outcome for cid, r in results.items() if cid != "seed"} == dict.fromkeys(ids, Promotion.PROMOTED)
    assert results["seed"].outcome is Promotion.NO_CANDIDATE
    assert listings.customers_in_production() == ids
    again = promotion.promote_all(GateConfig())  # all already served: read from the one listing alone
    assert {r.outcome for r in again if r.customer_id != "seed"} == {Promotion.ALREADY_PRODUCTION}

    for name in calls.counts:
        calls.counts[name] = 0
    rows = listings.model_rows()
    assert len(rows) == 106 and rows[0].customer_id == "c000" and all(r.kind == "customer" for r in rows)
    assert calls.counts == {"search_registered_models": 2, "search_model_versions": 1, "get_model_version_by_alias": 0}


def test_promotion_results_are_typed_and_previous_follows(onnx_model):
    gate = GateConfig()
    assert promotion.promote("acme", gate).outcome is Promotion.NO_CANDIDATE
    v1 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    first = promotion.promote("acme", gate)
    assert (first.outcome, first.version, first.serving) == (Promotion.PROMOTED, v1, True)
    assert promotion.promote("acme", gate).outcome is Promotion.ALREADY_PRODUCTION

    v2 = register("acme", onnx_model, {"consistency": "0.1", "copy_rate": "0.0", "diversity": "1.0"},
                  alias=model_names.CANDIDATE)
    refused = promotion.promote("acme", gate)
    assert refused.outcome is Promotion.REFUSED and not refused.serving and refused.version == v2
    assert any("consistency 0.10 < 0.50" in r for r in refused.reasons)
    assert model_versions.get_version(model_names.customer_model_name("acme"), v2).tags["gate"] == "refused"

    v3 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate, version=v2).outcome is Promotion.SUPERSEDED  # v3 came later
    assert promotion.promote("acme", gate, version=v3).outcome is Promotion.PROMOTED
    name = model_names.customer_model_name("acme")
    assert (str(model_versions.get_alias(name, "production").version), str(model_versions.get_alias(name, "previous").version)) \
        == (v3, v1)
    assert production_moves.rollback("acme").version == v1
    assert str(model_versions.get_alias(name, "previous").version) == v3
    with pytest.raises(production_moves.NoPreviousVersion):
        production_moves.rollback("nobody")


def test_a_version_of_older_uploads_registered_last_does_not_replace_one_of_the_current_uploads(onnx_model):
    """Two overlapping runs of one customer whose uploads changed between their ingestions: the
    earlier run ingested shots h1, the later one (the hour) h2, the uploads the customer has now.
    Whichever order they register and promote in, production ends on h2's version and the older
    shots' version is never promoted (`superseded`, not a failure): where it registered last it
    took `candidate`, and the newer run's promotion of its own version still goes through. Until
    2026-12-07 the older version was promoted and served until the next hour adapted h2 again (a
    known limit); the newer run's promotion was `superseded` by it."""
    from metagan.fleet_index import registry_index

    gate = GateConfig()

    def production(cid):
        return str(model_versions.get_alias(model_names.customer_model_name(cid), "production").version)

    def promote(cid, version):
        return promotion.promote_all(gate, [cid], {cid: version}, newest_uploads=True)[0]

    for order in ("newer promoted first", "older promoted first", "newer registered last"):
        cid = order.replace(" ", "-")
        registry_index().uploads_ingested([(cid, "sig-0", "h0")])
        first = register(cid, onnx_model, {"content_hash": "h0"}, alias=model_names.CANDIDATE)
        assert promote(cid, first).outcome is Promotion.PROMOTED
        registry_index().uploads_ingested([(cid, "sig-1", "h1")])  # the manual run reads the folder
        registry_index().uploads_ingested([(cid, "sig-2", "h2")])  # new files; the hour reads them
        if order == "newer registered last":
            older = register(cid, onnx_model, {"content_hash": "h1"}, alias=model_names.CANDIDATE)
            newer = register(cid, onnx_model, {"content_hash": "h2"}, alias=model_names.CANDIDATE)
        else:
            newer = register(cid, onnx_model, {"content_hash": "h2"}, alias=model_names.CANDIDATE)
        if order == "newer promoted first":
            assert promote(cid, newer).outcome is Promotion.PROMOTED
            older = register(cid, onnx_model, {"content_hash": "h1"}, alias=model_names.CANDIDATE)
            late = promote(cid, older)
            assert "older than the customer's last ingested" in late.reason and f"version {newer}" in late.reason
        elif order == "older promoted first":
            older = register(cid, onnx_model, {"content_hash": "h1"}, alias=model_names.CANDIDATE)
            late = promote(cid, older)
            assert production(cid) == first  # not the older shots' version: the newer's is on its way
            assert registry_index().pending_adaptation() == [cid]
            assert promote(cid, newer).outcome is Promotion.PROMOTED  # though the older took the candidate
        else:
            late = promote(cid, older)
            assert promote(cid, newer).outcome is Promotion.PROMOTED
        assert (late.outcome, late.version, late.serving) == (Promotion.SUPERSEDED, older, False), order
        assert production(cid) == newer, order
        assert registry_index().pending_adaptation() == [], order
    # a promotion that ingested nothing (the DVC adapt stage over a data version checked out on
    # purpose, `metagan promote`) promotes a version of other shots as before
    register(cid, onnx_model, {"content_hash": "h1"}, alias=model_names.CANDIDATE)
    assert promotion.promote(cid, gate).outcome is Promotion.PROMOTED


def promoted_twice(customer: str, onnx_model, gate: GateConfig) -> tuple[str, str]:
    """Two versions registered and promoted one after the other: (previous, production)."""
    first = register(customer, onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote(customer, gate).serving
    second = register(customer, onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote(customer, gate).serving
    return first, second


def test_a_rolled_back_version_is_not_promoted_again_until_a_rollback_brings_it_back(onnx_model):
    """Guarantee: rollback sticks. The version rolled back stays the candidate (re-adapting the same
    uploads finds it again), and a probe's next `metagan promote` put it straight back into
    production; now promotion refuses it, one by one and in batches, saying why, until a second
    rollback (the operator asking for it) returns it to production and lifts the refusal, and says
    that it undid the first (a probe's retried rollback silently served the bad version again)."""
    gate = GateConfig()
    name = model_names.customer_model_name("acme")
    v1, v2 = promoted_twice("acme", onnx_model, gate)
    first = production_moves.rollback("acme")
    assert (first.version, first.undid_a_rollback) == (v1, False)
    for again in (promotion.promote("acme", gate), *promotion.promote_all(gate, ["acme"]),
                  *[r for r in promotion.promote_all(gate) if r.customer_id == "acme"]):
        assert (again.outcome, again.version, again.serving) == (Promotion.HELD, v2, False)
        assert "rolled back" in again.reason  # held, not refused: no run reports "partial" for it
    [row] = [r for r in listings.model_rows() if r.customer_id == "acme"]
    assert row.held_back == [v2]
    assert str(model_versions.get_alias(name, "production").version) == v1
    back = production_moves.rollback("acme")  # back again, asked for: said so (a retried rollback undoes the first)
    assert (back.version, back.undid_a_rollback) == (v2, True)
    assert "undid" in back.describe("acme") and "undid" not in first.describe("acme")
    assert model_versions.get_version(name, v1).tags[registry.ROLLED_BACK_TAG] == "true"
    assert model_versions.get_version(name, v2).tags[registry.ROLLED_BACK_TAG] == "false"
    v3 = register("acme", onnx_model, alias=model_names.CANDIDATE)  # new uploads: a new candidate
    assert promotion.promote("acme", gate).outcome is Promotion.PROMOTED
    assert str(model_versions.get_alias(name, "previous").version) == v2 != v3


def test_a_rollback_an_earlier_metagan_made_is_held_after_the_upgrade(onnx_model):
    """Guarantee: a rollback made by a metagan of before 2026-12-06, which only swapped the aliases
    (no `rolled_back` tag), is held as today's are: the candidate is `previous` and newer than
    production, so promotion, one by one and in batches, and the listing's "held back" say so.
    An upgrade probe of 2026-12-07 saw the first `metagan promote` after the upgrade put the
    withdrawn version back into production. A promotion's `previous` (older than production) is
    no rollback; a later candidate (new uploads) is promoted as ever."""
    gate = GateConfig()
    name = model_names.customer_model_name("acme")
    v1, v2 = promoted_twice("acme", onnx_model, gate)
    assert promotion.promote("acme", gate).outcome is Promotion.ALREADY_PRODUCTION  # previous v1 is older: no hold
    model_versions.set_alias(name, model_names.PRODUCTION, v1)  # the rollback as that metagan made it
    model_versions.set_alias(name, model_names.PREVIOUS, v2)
    for again in (promotion.promote("acme", gate), *promotion.promote_all(gate, ["acme"])):
        assert (again.outcome, again.version, again.serving) == (Promotion.HELD, v2, False)
    [row] = [r for r in listings.model_rows() if r.customer_id == "acme"]
    assert row.held_back == [v2]
    assert str(model_versions.get_alias(name, "production").version) == v1
    register("acme", onnx_model, alias=model_names.CANDIDATE)  # new uploads: a new candidate
    assert promotion.promote("acme", gate).outcome is Promotion.PROMOTED


def test_uploads_flipped_back_and_forth_are_promoted_each_time_not_held_as_a_rollback(onnx_model):
    """Guarantee: a customer whose uploads go back to an earlier set gets that set's version again
    (reused, promoted over a newer one), and when they change back once more, the newer version
    again. That newer version, left as `previous` by the first, read as an earlier metagan's
    rollback (`previous` newer than production): a probe of 2026-12-08 saw it "held back: rolled
    back (metagan rollback)" with no rollback made, exit 0, the customer's old model served."""
    from metagan.fleet_index import registry_index
    from metagan.lifecycle.fleet_repair import repair_index

    gate = GateConfig()
    name = model_names.customer_model_name("acme")
    a = register("acme", onnx_model, {"content_hash": "A"}, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).outcome is Promotion.PROMOTED
    b = register("acme", onnx_model, {"content_hash": "B"}, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).outcome is Promotion.PROMOTED
    for back in (a, b, a):  # the uploads flip: each time the other version, reused
        model_versions.set_alias(name, model_names.CANDIDATE, back)
        result = promotion.promote("acme", gate)
        assert (result.outcome, result.version) == (Promotion.PROMOTED, back), result.reason
        assert str(model_versions.get_alias(name, "production").version) == back
        [row] = [r for r in listings.model_rows() if r.customer_id == "acme"]
        assert row.held_back == []
        # the index's uploads adapted are the registry's (the candidate's, not the newest number's):
        # doctor repaired them each time, and the next hour adapted them again (probes of 2026-12-08)
        assert [r for r in repair_index(registry_index(), 86400).repaired if r[0] == "acme"] == []
    production_moves.rollback("acme")  # a real rollback is still held
    assert promotion.promote("acme", gate).outcome is Promotion.HELD
    assert [r for r in repair_index(registry_index(), 86400).repaired if r[0] == "acme"] == []


def test_a_rollback_from_a_version_production_no_longer_serves_changes_nothing(onnx_model, capsys):
    """Guarantee: `metagan rollback --from N` rolls back only while production serves version N: an
    hourly run that promoted a newer version since the operator looked, or another operator's
    rollback first, leaves the registry as it is, exit 3, naming the version served. Without it a
    probe of 2026-12-07 saw a rollback just after an hour's promotion take out the new version and
    put back the one the operator meant to remove."""
    from flows.app.cli import main
    from metagan.errors import ExitCode

    gate, name = GateConfig(), model_names.customer_model_name("acme")
    register("acme", onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).serving
    v2 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).serving
    v3 = register("acme", onnx_model, alias=model_names.CANDIDATE)  # the hour, after the operator looked at v2
    assert promotion.promote("acme", gate).serving
    with pytest.raises(production_moves.ProductionMoved, match=f"production serves version {v3}, not version {v2}: "
                                                               f"nothing rolled back .* --from {v3}"):
        production_moves.rollback("acme", expected=v2)
    assert str(model_versions.get_alias(name, "production").version) == v3
    assert registry.ROLLED_BACK_TAG not in model_versions.get_version(name, v3).tags
    assert main(["rollback", "--customer", "acme", "--from", v2]) == ExitCode.BAD_INPUT
    assert "nothing rolled back" in capsys.readouterr().err
    assert main(["rollback", "--customer", "acme", "--from", v3]) == ExitCode.OK
    assert f"production is now version {v2}" in capsys.readouterr().out


def test_a_rollback_to_a_damaged_model_is_refused_and_production_stays(onnx_model):
    """Guarantee: rollback reads the previous version's model file and checks it first; one that
    does not match its registered checksum is refused as damaged (exit 5) and production stays
    where it was. A probe's rollback put a truncated model into production, and the next batch
    failed."""
    from metagan.errors import Damaged

    gate, name = GateConfig(), model_names.customer_model_name("acme")
    v1 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).serving
    v2 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).serving
    model_versions.set_version_tags(name, v1, {model_versions.ONNX_SHA256_TAG: "0" * 64})  # its file no longer matches
    with pytest.raises(Damaged, match="customer 'acme': metagan-customer-acme version 1 is damaged"):
        production_moves.rollback("acme")
    assert str(model_versions.get_alias(name, "production").version) == v2
    assert registry.ROLLED_BACK_TAG not in model_versions.get_version(name, v2).tags


def test_a_candidate_whose_model_file_is_damaged_is_not_promoted_and_the_others_are(onnx_model, capsys):
    """Guarantee: `metagan promote` reads a candidate's model file and checks it before production
    moves to it, as rollback does: a damaged one is refused with the reason (exit 1: the others
    are promoted), production stays. A probe of 2026-12-07 promoted a candidate whose file was
    damaged after its adaptation (the gate judges the evidence recorded then), and the night then
    failed that customer, exit 5. (The adaptation run's own promotion of the version it has just
    written and checked does not read it again.)"""
    from flows.app.cli import main
    from metagan.errors import ExitCode

    gate, name = GateConfig(), model_names.customer_model_name("acme")
    v1 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).serving
    v2 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    model_versions.set_version_tags(name, v2, {model_versions.ONNX_SHA256_TAG: "0" * 64})  # damaged since
    register("zed", onnx_model, alias=model_names.CANDIDATE)
    assert main(["promote"]) == ExitCode.PARTIAL
    out = capsys.readouterr().out
    assert f"acme: refused (its model file is damaged, not promoted: customer 'acme': {name} version {v2} is damaged" in out
    assert "zed: promoted" in out
    assert str(model_versions.get_alias(name, "production").version) == v1


def test_a_customer_without_production_is_told_of_its_refused_candidate_and_how_to_preview_it(onnx_model):
    """`metagan generate` for a customer whose candidate the gate refused said "run adapt and promote
    first" to a new user who had done both (2026-12-07): it names the candidate, the gate's reason and
    the preview."""
    from metagan import serving
    from metagan.errors import NotFound

    with pytest.raises(NotFound, match=r"has no production model \(run adapt and promote first\)"):
        serving.served_model("acme")
    v1 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    with pytest.raises(NotFound, match=f"its candidate, version {v1}, is not promoted yet: `metagan promote`"):
        serving.served_model("acme")
    assert not promotion.promote("acme", GateConfig(max_parity_diff=1e-9)).serving  # its parity 1e-6
    with pytest.raises(NotFound, match=f"its candidate, version {v1}, was refused by the gate: .*; "
                                       "`metagan generate --customer acme --alias candidate` previews it"):
        serving.served_model("acme")
    # and `metagan models` lists it with the gate's reason (it was only a tag on the version)
    from flows.app.registry_commands import models_table

    [row] = [r for r in listings.model_rows() if r.customer_id == "acme"]
    assert row.refused == (v1, model_versions.get_version(model_names.customer_model_name("acme"), v1).tags["gate_reason"])
    table = models_table(listings.model_rows())
    assert f"refused by the gate (candidates not served; preview one with `metagan generate --customer ID --alias " \
           f"candidate`):\n  acme v{v1}: " in table and "parity" in table.split("refused by the gate")[1]


class Killed(BaseException):
    """A SIGKILL as the registry sees it: the write it lands on and every later one never happen."""


class KilledAtWrite:
    """The registry writer (every alias and tag write goes through it) with its writes counted; the
    one numbered ``at`` (from 0) and all after it never happen."""

    def __init__(self, monkeypatch, at: int):
        self.at, self.writes, real = at, 0, model_versions._registry_writer
        monkeypatch.setattr(model_versions, "_registry_writer", lambda: self._wrap(real()))

    def _wrap(self, writer):
        outer = self

        class Writer:
            def __getattr__(self, attr):
                call = getattr(writer, attr)
                if not attr.startswith("set_"):
                    return call

                def write(*a, **k):
                    if outer.writes >= outer.at:
                        raise Killed(attr)
                    outer.writes += 1
                    return call(*a, **k)

                return write

        return Writer()


def test_a_promotion_or_rollback_killed_at_any_write_leaves_a_state_the_next_command_finishes(onnx_model,
                                                                                               monkeypatch):
    """Guarantee: a promotion or a rollback killed before any one of its registry writes leaves
    production on the old version or the new one, never on a version between; where it cut the
    move short between `previous` and `production` (both on one version), the next promote (one
    customer or a batch), rollback or `metagan doctor` finishes the move from the record written
    before it, and a rerun of the killed command ends in the state it would have made. A probe's
    rollback killed between its two alias writes left `production` and `previous` on one version:
    the version rolled away from was lost, and the next rollback "rolled back" to the same version
    and left it in production tagged rolled back."""
    gate = GateConfig()

    def state(cid: str) -> tuple[str, str]:
        name = model_names.customer_model_name(cid)
        return tuple(str(model_versions.get_alias(name, a).version)
                     for a in (model_names.PRODUCTION, model_names.PREVIOUS))

    finishers = {"promote": [lambda c: promotion.promote(c, gate), lambda c: promotion.promote_all(gate, [c]),
                             lambda c: promotion.promote_all(gate), lambda c: production_moves.finish_cut_short_moves()],
                 "rollback": [lambda c: production_moves.rollback(c), lambda c: production_moves.finish_cut_short_moves(),
                              lambda c: promotion.promote(c, gate)]}
    stuck_seen = set()
    for op in ("promote", "rollback"):
        for at in range(12):
            cid = f"{op}{at}"
            v1 = register(cid, onnx_model, alias=model_names.CANDIDATE)
            assert promotion.promote(cid, gate).serving
            v2 = register(cid, onnx_model, alias=model_names.CANDIDATE)
            assert promotion.promote(cid, gate).serving
            if op == "promote":
                v3 = register(cid, onnx_model, alias=model_names.CANDIDATE)
                old, new = (v2, v1), (v3, v2)
            else:
                old, new = (v2, v1), (v1, v2)
            with monkeypatch.context() as m:
                killed = KilledAtWrite(m, at)
                try:
                    promotion.promote(cid, gate) if op == "promote" else production_moves.rollback(cid)
                except Killed:
                    pass
                else:
                    assert state(cid) == new
                    break  # every write of the move was a kill point
            cut_short = (old[0], old[0])  # previous moved, production not yet: the old version still serves
            assert state(cid) in (old, new, cut_short), (op, at, killed.writes, state(cid))
            if state(cid) == cut_short:
                finish = finishers[op][len([s for s in stuck_seen if s[0] == op]) % len(finishers[op])]
                stuck_seen.add((op, at))
                finish(cid)
                assert state(cid) == new, (op, at, finish)
            elif op == "rollback" and state(cid) == old:
                assert production_moves.rollback(cid).version == v1  # asked again
            elif op == "promote" and state(cid) == old:
                assert promotion.promote(cid, gate).outcome is Promotion.PROMOTED
            assert state(cid) == new, (op, at)
            if op == "rollback":
                name = model_names.customer_model_name(cid)
                assert model_versions.get_version(name, v2).tags[registry.ROLLED_BACK_TAG] == "true"
                assert model_versions.get_version(name, v1).tags.get(registry.ROLLED_BACK_TAG) != "true"
                assert production_moves.rollback(cid) == production_moves.Rollback(v2, undid_a_rollback=True)  # swaps back: nothing lost
        else:
            raise AssertionError(f"{op} made more than 12 writes")
    assert {op for op, _ in stuck_seen} == {"promote", "rollback"}  # each was cut short between its alias writes


def test_a_rollback_after_a_promotion_cut_short_finishes_it_and_rolls_it_back(onnx_model, monkeypatch):
    """Guarantee: a rollback that finds a promotion cut short between its alias writes finishes the
    promotion, then rolls it back: the version that served goes on serving, and the one the
    promotion meant to serve is held back, as after a promotion and a rollback."""
    gate, name = GateConfig(), model_names.customer_model_name("acme")
    v1 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).serving
    v2 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    with monkeypatch.context() as m:
        KilledAtWrite(m, 4)  # gate, gate_reason, the record, previous: production is never written
        with pytest.raises(Killed):
            promotion.promote("acme", gate)
    assert [str(model_versions.get_alias(name, a).version) for a in ("production", "previous")] == [v1, v1]
    assert production_moves.rollback("acme").version == v1
    assert [str(model_versions.get_alias(name, a).version) for a in ("production", "previous")] == [v1, v2]
    assert promotion.promote("acme", gate).outcome is Promotion.HELD


def test_production_and_previous_on_one_version_without_a_record_is_reported_not_rolled_back_to(onnx_model):
    """Guarantee: `production` and `previous` on one version with no record of a move that explains
    it (a rollback cut short by a metagan before the record existed) is named by `metagan doctor`
    and refused by rollback ("nothing to roll back to"), never rolled back to the same version."""
    gate, name = GateConfig(), model_names.customer_model_name("acme")
    v1 = register("acme", onnx_model, alias=model_names.CANDIDATE)
    assert promotion.promote("acme", gate).serving
    model_versions.set_alias(name, model_names.PREVIOUS, v1)
    [found] = production_moves.finish_cut_short_moves()
    assert not found.finished and "no record of a move explains it" in found.describe()
    with pytest.raises(production_moves.NoPreviousVersion, match="nothing to roll back to"):
        production_moves.rollback("acme")
    assert registry.ROLLED_BACK_TAG not in model_versions.get_version(name, v1).tags

def test_metrics_are_written_as_tags_that_read_back_as_the_same_floats():
    metrics = {"consistency": 0.1 + 0.2, "shot_coverage": 1 / 3, "parity_max_abs_diff": 2.384185791015625e-07}
    tags = registry.metric_tags(metrics) | {"parity_ok": "true"}

    class Version:
        pass

    v = Version()
    v.tags = tags
    assert registry.evidence(v).metrics == metrics and registry.evidence(v).parity_ok


def test_a_generate_during_promotions_serves_one_complete_version(store):
    """Guarantee: the batch job reads `production` once and loads the version it names
    (models:/name/<version>): while promotions and rollbacks move the alias between two versions,
    every load returns the bytes of the version it reports."""
    from metagan.export import export_generator_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    name = model_names.customer_model_name("acme")
    onnx = {}
    for seed in (1, 2):
        torch.manual_seed(seed)
        path = export_generator_onnx(SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)),
                                                     torch.randn(8)), store / f"g{seed}.onnx")
        with tracking.start_run(f"v{seed}", {}):
            mv = model_versions.log_onnx_model(path, name, GOOD_TAGS)
        onnx[str(mv.version)] = serving.load_onnx_bytes(f"models:/{name}/{mv.version}")
        model_versions.set_alias(name, model_names.CANDIDATE, mv.version)
        assert promotion.promote("acme", GateConfig()).serving
    assert onnx["1"] != onnx["2"]

    stop, errors, served = threading.Event(), [], []

    def flip():
        try:
            while not stop.is_set():
                production_moves.rollback("acme")
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            errors.append(e)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        for _ in range(12):
            model = serving.production_model("acme")
            served.append(model.version)
            assert model.onnx == onnx[model.version] and model.uri == f"models:/{name}/{model.version}"
    finally:
        stop.set()
        flipper.join()
    assert not errors and set(served) <= {"1", "2"}


def test_a_logged_onnx_model_is_ready_with_params_metrics_signature_and_the_file_itself(onnx_model, store):
    """log_onnx_model does log_model's steps with the client's calls: what MLflow's UI and loaders
    read of a logged model is all there."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    from metagan.files import sha256_file

    path = store / "g.onnx"
    with tracking.start_run("one-model", {}) as run:
        version = model_versions.log_onnx_model(path, model_names.customer_model_name("m"), {"parity_ok": "true"},
                                                metrics={"shot_coverage": 0.25}, params={"adapt.steps": "3"})
    logged = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.status == LoggedModelStatus.READY and logged.source_run_id == run.info.run_id
    assert logged.params == {"adapt.steps": "3"}
    assert {(m.key, m.value) for m in logged.metrics} == {("shot_coverage", 0.25)}
    assert MlflowClient().get_run(run.info.run_id).data.metrics == {"shot_coverage": 0.25}
    assert MlflowClient().get_run(run.info.run_id).data.params == {"adapt.steps": "3"}  # with the metrics
    assert [o.model_id for o in MlflowClient().get_run(run.info.run_id).outputs.model_outputs] == [logged.model_id]
    info = mlflow.models.get_model_info(version.source)
    assert info.signature is not None and info.flavors.keys() >= {"onnx", "python_function"}
    stored = mlflow.artifacts.download_artifacts(version.tags[model_versions.ONNX_FILE_TAG], dst_path=str(store / "dl"))
    assert sha256_file(stored) == sha256_file(path) == version.tags[model_versions.ONNX_SHA256_TAG]
    assert mlflow.pyfunc.load_model(version.source) is not None
