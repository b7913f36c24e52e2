"""metagan serve and deploy: the deployments, their schedules, and how serving stops."""

import os


def test_deployments_carry_the_cron_schedules_from_params(tmp_path):
    import yaml

    from flows.serve import deployments
    from metagan.config import PROJECT_ROOT

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["schedules"]["adapt_cron"] = "*/5 * * * *"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    deps = {d.name: d for d in deployments(str(tmp_path / "uploads"), str(tmp_path / "params.yaml"))}
    assert set(deps) == {"hourly-adapt", "weekly-meta-train", "nightly-generate"}
    assert deps["hourly-adapt"].schedules[0].schedule.cron == "*/5 * * * *"
    assert deps["weekly-meta-train"].schedules[0].schedule.cron == params["schedules"]["meta_train_cron"]
    assert deps["hourly-adapt"].parameters["customers_dir"] == str(tmp_path / "uploads")


def test_pool_deployments_run_in_the_project_folder_and_serving_leaves_them_alone(prefect_harness, tmp_path,
                                                                                   monkeypatch):
    """Guarantee: a process worker runs each flow in a temporary folder unless told where (a probe's
    scheduled runs read the shipped defaults, ingested into a folder deleted after the run, and a
    relative --params failed): `metagan deploy` records the params file as an absolute path and
    the project folder as the runs' working folder and METAGAN_PROJECT. `metagan serve` on the same
    server then refuses to replace those deployments with ones only its own process could run."""
    import pytest
    from prefect.client.orchestration import get_client

    from flows.serve import deploy_to_pools, serve_all
    from metagan.config import PROJECT_ENV
    from metagan.errors import BadInput

    (tmp_path / "params.yaml").write_text("schedules:\n  generate_count: 7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    deploy_to_pools(str(tmp_path / "uploads"), "params.yaml", "test-cpu", "test-gpu")
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly-generate/nightly-generate")
    assert nightly.parameters == {"params_path": str(tmp_path / "params.yaml"), "count": 7}
    assert nightly.job_variables == {"working_dir": str(tmp_path), "env": {PROJECT_ENV: str(tmp_path)}}
    with pytest.raises(BadInput, match="nightly-generate/nightly-generate \\(pool test-cpu\\)"):
        serve_all(str(tmp_path / "uploads"), "params.yaml")


def test_serve_stopped_by_a_ctrl_c_exits_as_every_interrupted_command_does(prefect_harness, tmp_path, monkeypatch,
                                                                           capsys):
    """Prefect's serve ends on a KeyboardInterrupt by returning, and `metagan serve` then exited 0,
    where every other command a Ctrl-C ends says "interrupted" and exits 130 (a probe of 2026-12-07).
    The runner is Prefect's own, its start interrupted at once."""
    from types import SimpleNamespace

    from prefect.runner import Runner

    from flows.app.commands import cmd_serve
    from metagan.errors import ExitCode

    async def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "start", interrupted)
    monkeypatch.setattr("flows.serve.deployments_on_pools", lambda wanted: [])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uploads").mkdir()
    assert cmd_serve(SimpleNamespace(customers=str(tmp_path / "uploads"), params=None), None) \
        == ExitCode.INTERRUPTED == 130
    assert "interrupted" in capsys.readouterr().err


SCHEDULED_RUNS_PROBE = """
import sys, time
from flows import ephemeral, serve
ephemeral.mark_owner()  # as the command does: a killed probe's server is stopped by the next flow command

def probe(*deployments):  # Prefect's serve, up to its runner: the deployments registered with their schedules
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    for d in deployments:
        d.apply()
    wanted = DeploymentFilter(name=DeploymentFilterName(any_=["hourly-adapt"]))
    deadline = time.monotonic() + float(sys.argv[2])
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(deployment_filter=wanted)
            if runs or time.monotonic() > deadline:
                break
            time.sleep(1)
    print("scheduled runs of hourly-adapt:", len(runs), flush=True)

serve.serve = probe
serve.serve_all(sys.argv[1], None)
"""


def test_serve_without_a_prefect_server_turns_its_schedules_into_runs(tmp_path):
    """Guarantee: `metagan serve` without a Prefect server (`PREFECT_API_URL`, the embedded way)
    runs its deployments on their schedules: the private server it starts runs Prefect's
    scheduler, which makes the schedules' flow runs for the runner to pick up. Prefect 3 starts
    that server without its services (`PREFECT__SERVER_EPHEMERAL`), so a served deployment never
    ran: a probe of 2026-12-07 served a one-minute `adapt_cron` for 200 s and the server held no
    flow run of it. By hand since: `metagan serve` with that cron ran the hour at the minute and
    promoted the customer whose uploads changed."""
    import subprocess
    import sys

    from metagan.config import PROJECT_ROOT

    (tmp_path / "uploads").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))} | {
        "PYTHONPATH": str(PROJECT_ROOT), "PREFECT_HOME": str(tmp_path / "prefect"), "METAGAN_PROJECT": str(tmp_path),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    done = subprocess.run([sys.executable, "-c", SCHEDULED_RUNS_PROBE, str(tmp_path / "uploads"), "45"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = [line for line in done.stdout.splitlines() if line.startswith("scheduled runs of hourly-adapt:")]
    assert found and int(found[0].rsplit(":", 1)[1]) > 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_deploying_again_keeps_what_the_operator_paused(prefect_harness, tmp_path, monkeypatch, capsys):
    """Guarantee: `metagan deploy` run again (after editing the schedules, as docs/DEPLOY.md says)
    keeps a deployment the operator paused paused, and a paused schedule paused, and says so; the
    others are applied as before. It resumed them without a word (a walkthrough of docs/DEPLOY.md,
    2026-12-07: the weekly meta-training, paused for a torchrun cron job, would have run beside it)."""
    from types import SimpleNamespace

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.app.commands import cmd_deploy
    from flows.serve import deploy_to_pools
    from metagan.config import PROJECT_ENV

    (tmp_path / "params.yaml").write_text("schedules:\n  generate_count: 7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    first = deploy_to_pools(str(tmp_path / "uploads"), "params.yaml", "pause-cpu", "pause-gpu")
    assert not any(d.paused for d in first)
    with get_client(sync_client=True) as client:
        weekly = client.read_deployment_by_name("scheduled-meta-train/weekly-meta-train")
        client.update_deployment_schedule(weekly.id, weekly.schedules[0].id, active=False)  # as the CLI's pause does
        nightly = client.read_deployment_by_name("nightly-generate/nightly-generate")
        client.pause_deployment(nightly.id)  # the UI's toggle

    assert PREFECT_API_URL.value()
    args = SimpleNamespace(customers=str(tmp_path / "uploads"), params="params.yaml", cpu_pool="pause-cpu",
                           gpu_pool="pause-gpu")
    with monkeypatch.context() as m:
        m.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
        assert cmd_deploy(args, None) == 0
    out = capsys.readouterr().out
    assert "scheduled-meta-train/weekly-meta-train -> work pool pause-gpu (its schedule paused, as it was: " \
           "`prefect deployment schedule resume scheduled-meta-train/weekly-meta-train ID`" in out
    assert "nightly-generate/nightly-generate -> work pool pause-cpu (paused, as it was: its toggle in the Prefect " \
           "UI resumes it)" in out
    assert "adapt-new-customers/hourly-adapt -> work pool pause-cpu\n" in out
    with get_client(sync_client=True) as client:
        weekly = client.read_deployment_by_name("scheduled-meta-train/weekly-meta-train")
        nightly = client.read_deployment_by_name("nightly-generate/nightly-generate")
        hourly = client.read_deployment_by_name("adapt-new-customers/hourly-adapt")
    assert [s.active for s in weekly.schedules] == [False] and not weekly.paused
    assert nightly.paused
    assert [s.active for s in hourly.schedules] == [True] and not hourly.paused


def test_deploying_what_serve_made_runs_it_and_serving_again_keeps_a_paused_schedule(prefect_harness, tmp_path,
                                                                                    monkeypatch):
    """Guarantee: deployments `metagan serve` made (on no work pool) are paused by the serve as it
    stops; `metagan deploy` of them after that (the move from serve to deploy at an upgrade) runs
    them: an upgrade probe of 2026-12-07 saw all three kept paused, no schedule firing. A schedule
    the operator paused stays paused when `metagan serve` starts again (serving made it anew,
    active)."""
    from prefect.client.orchestration import get_client

    from flows.serve import _keep_schedule_pauses, deploy_to_pools, deployments
    from metagan.config import PROJECT_ENV

    (tmp_path / "params.yaml").write_text("schedules:\n  generate_count: 7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    from prefect.exceptions import ObjectNotFound

    served = deployments(str(tmp_path / "uploads"), "params.yaml")
    with get_client(sync_client=True) as client:
        for dep in served:  # the session's server: another test's deployments of these names go first
            try:
                client.delete_deployment(client.read_deployment_by_name(f"{dep.flow_name}/{dep.name}").id)
            except ObjectNotFound:
                pass
        for dep in served:  # as `metagan serve` applies them, then pauses them as it stops
            client.pause_deployment(dep.apply())
        weekly = client.read_deployment_by_name("scheduled-meta-train/weekly-meta-train")
        client.update_deployment_schedule(weekly.id, weekly.schedules[0].id, active=False)
    again = deployments(str(tmp_path / "uploads"), "params.yaml")
    _keep_schedule_pauses(again)
    assert [[s.active for s in d.schedules] for d in again] == [[True], [False], [True]]
    deployed = deploy_to_pools(str(tmp_path / "uploads"), "params.yaml", "served-cpu", "served-gpu")
    assert [(d.paused, d.schedule_paused) for d in deployed] == [(False, False), (False, True), (False, False)]
    with get_client(sync_client=True) as client:
        now = [client.read_deployment_by_name(f"{d.flow_name}/{d.name}") for d in served]
    assert [d.paused for d in now] == [False, False, False]
    assert [d.work_pool_name for d in now] == ["served-cpu", "served-gpu", "served-cpu"]

