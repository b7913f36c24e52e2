"""The ``metagan`` command (flows/app/cli.py): flags documented with their defaults, global options
anywhere, one-line errors with the exit codes of metagan.errors for every user mistake."""

import argparse
import json
import os
from pathlib import Path

import pytest

from flows.app.cli import build_parser, main
from metagan.meta import REGISTRY
from metagan.errors import BadInput, ExitCode, NotFound


pytestmark = pytest.mark.usefixtures("clean_process")  # tests/conftest.py


def subcommands() -> dict[str, argparse.ArgumentParser]:
    return next(a for a in build_parser()._actions if a.dest == "command").choices


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err.strip().splitlines()


def test_version(capsys):
    import tomllib
    from pathlib import Path

    import metagan

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"metagan {metagan.__version__}\n"
    # one home: the package's version is read from metagan.__version__, not written twice
    project = tomllib.loads((Path(metagan.__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]


def test_every_flag_of_every_command_is_documented_with_its_default():
    for name, parser in subcommands().items():
        helps = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"metagan {name} {action.option_strings[0]} has no help"
            if action.default not in (None, False, argparse.SUPPRESS) or "default" in action.help:
                text = parser._get_formatter()._get_help_string(action)
                assert "default" in text, f"metagan {name} {action.option_strings[0]} does not show its default"
        assert "--project" in helps and "--params" in helps and "--quiet" in helps


def test_global_options_are_accepted_after_the_subcommand(tmp_path):
    params = str(tmp_path / "p.yaml")
    before = build_parser().parse_args(["--params", params, "-v", "models"])
    after = build_parser().parse_args(["models", "--params", params, "-v"])
    assert (before.params, before.verbose) == (after.params, after.verbose) == (params, True)
    # given nowhere, they keep their defaults
    neither = build_parser().parse_args(["models"])
    assert neither.params is None and neither.verbose is False and neither.project is None


@pytest.mark.parametrize("argv, code, says", [
    (["generate", "--customer", "../x"], ExitCode.BAD_INPUT, "unsafe customer id"),
    (["generate", "--customer", "café"], ExitCode.BAD_INPUT, "unsafe customer id: use 1-64 ASCII letters (A-Z, a-z)"),
    (["generate", "--customer", "x", "--count", "-5"], ExitCode.USAGE, "--count: must be at least 1, got -5"),
    (["generate", "--customer", "x", "--count", "0"], ExitCode.USAGE, "--count: must be at least 1, got 0"),
    (["generate", "--customer", "x", "--count", "many"], ExitCode.USAGE, "not a whole number"),
    (["generate", "--customer", "x", "--count", "100000000000"], ExitCode.USAGE, "--count: must be at most 100,000"),
    (["generate", "--customer", "x", "--seed", "-1"], ExitCode.USAGE, "--seed: must be at least 0, got -1"),
    (["generate"], ExitCode.USAGE, "say which model"),
    (["generate", "--customer", "x", "--out", "s3://"], ExitCode.BAD_INPUT, "'s3://': no bucket"),
    (["generate", "--customer", "x", "--out", "S3://bucket/x"], ExitCode.BAD_INPUT, "s3:// in lowercase"),
    (["generate", "--all", "--out", "s3://b/x"], ExitCode.BAD_INPUT, "'b' is not an S3 bucket name"),
    (["generate", "--all", "--out", ""], ExitCode.USAGE, "--out needs a folder"),  # was the current folder
    (["generate", "--customer", "x", "--out", "out\x01x"], ExitCode.BAD_INPUT, "a control character"),
    (["schedule", "--customer", "x", "--every", "nanh"], ExitCode.USAGE, "from a minute (0.017h) to 3650 days"),
    (["schedule", "--customer", "x", "--every", "1e30h"], ExitCode.USAGE, "from a minute (0.017h) to 3650 days"),
    (["schedule", "--customer", "x", "--every", "1e-300h"], ExitCode.USAGE, "from a minute"),
    (["schedule", "--customer", "x", "--every=--"], ExitCode.USAGE, "write hours or days"),
    (["generate", "--customer", "x", "--alias", "candidate", "--version", "2"], ExitCode.USAGE, "not allowed with"),
    (["promote", "--customer", "../x"], ExitCode.BAD_INPUT, "unsafe customer id"),
    (["rollback", "--customer", "a/b"], ExitCode.BAD_INPUT, "unsafe customer id"),
    (["adapt", "--customers", "/no/such/folder"], ExitCode.BAD_INPUT, "/no/such/folder: no such folder"),
    (["ingest", "--customers", "/no/such/folder"], ExitCode.BAD_INPUT, "/no/such/folder: no such folder"),
    (["--params", "/no/such/params.yaml", "models"], ExitCode.BAD_INPUT, "params file /no/such/params.yaml does "
                                                                         "not exist"),
    (["models", "--project", "/no/such/project"], ExitCode.BAD_INPUT, "/no/such/project: no such folder"),
    (["meta-train", "--minutes", "-1"], ExitCode.USAGE, "--minutes: must be 0 or more"),
    (["meta-train", "--method", "nosuch"], ExitCode.USAGE, "invalid choice"),
    (["nosuch"], ExitCode.USAGE, "invalid choice"),
])
def test_every_user_mistake_gets_one_line_and_its_exit_code(capsys, monkeypatch, tmp_path, argv, code, says):
    """In a folder with no registry, no index and no data: a mistake is said before any state is
    looked for (it was exit 5, "no registry", for `schedule --every 1e30h` in a fresh clone), and
    nothing is made or swept (Prefect servers that killed runs left go only when work follows)."""
    monkeypatch.chdir(tmp_path)
    swept = []
    monkeypatch.setattr("flows.ephemeral.stop_orphaned_servers", lambda: swept.append(1))
    rc, err = run(capsys, *argv)
    assert not swept and not any(tmp_path.iterdir())
    assert rc == code
    assert len(err) == 1 and says in err[0], err
    assert "Traceback" not in err[0]


def test_an_output_location_that_is_a_file_says_so_naming_it_before_any_work(capsys, monkeypatch, tmp_path):
    """`--out` naming a file (or a path under one) said "cannot write OUT: File exists" (or "Not a
    directory"), exit 6, and `pipeline` only after its training (probe of 2026-12-06): the same
    exit code, before any work, saying what is wrong and which file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("flows.ephemeral.stop_orphaned_servers", lambda: pytest.fail("work started"))
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    itself, under = f"error: the output location {afile} is a file, not a folder", \
        f"error: the output location {afile / 'sub'} is under {afile}, a file, not a folder"
    for argv, said in ((["generate", "--customer", "acme", "--out", "afile"], itself),
                       (["generate", "--customer", "acme", "--out", "afile/sub"], under),
                       (["generate", "--all", "--out", str(afile)], itself),
                       (["pipeline", "--customers", str(tmp_path), "--out", "afile"], itself),
                       (["demo", "--out", "afile/sub"], under)):
        assert run(capsys, *argv) == (ExitCode.FILE_SYSTEM, [said]), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_deploy_without_a_prefect_server_is_bad_input(capsys, tmp_path, monkeypatch):
    """Without one it registered the deployments with Prefect's private server (in ~/.prefect, where
    no worker looks, and where `metagan serve` then refused to serve them) and exited 0."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # a server another test's killed command left would add its warning line (a flake, 2026-12-07)
    monkeypatch.setattr("flows.ephemeral.stop_orphaned_servers", lambda: 0)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        rc, err = run(capsys, "deploy", "--customers", str(tmp_path))
    assert rc == ExitCode.BAD_INPUT
    assert len(err) == 1 and "set PREFECT_API_URL=http://HOST:4200/api" in err[0]


def test_a_wrong_params_path_is_an_error_not_the_defaults(tmp_path):
    from metagan.config import load_params
    from metagan.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nonexistent.yaml")


def test_verbose_shows_the_traceback_of_a_known_failure(capsys):
    rc = main(["-v", "generate", "--customer", "../x"])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT and "Traceback" in err and err.strip().endswith(
        "starting with a letter or digit")


def test_an_unexpected_failure_is_a_bug_with_its_traceback(capsys, monkeypatch):
    def broken(args, params):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr("flows.app.cli.build_parser", _parser_with(init=broken))
    rc = main(["init"])
    err = capsys.readouterr().err
    assert rc == ExitCode.INTERNAL == 70 and "Traceback" in err and "a bug" in err


def test_known_failures_keep_their_kind_whatever_the_command(capsys, monkeypatch):
    def refuses(args, params):
        raise BadInput("customer 'x' has no such thing")

    monkeypatch.setattr("flows.app.cli.build_parser", _parser_with(init=refuses))
    assert main(["init"]) == ExitCode.BAD_INPUT
    assert capsys.readouterr().err.strip() == "error: customer 'x' has no such thing"


def _parser_with(**funcs):
    real = build_parser

    def build():
        p = real()
        for name, func in funcs.items():
            next(a for a in p._actions if a.dest == "command").choices[name].set_defaults(func=func)
        return p

    return build


def test_adapt_in_a_new_project_names_the_command_that_starts_one(tmp_path, capsys):
    (tmp_path / "c" / "x").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(f"paths:\n  meta_checkpoint: {tmp_path / 'none.pt'}\n")
    rc, err = run(capsys, "--project", str(tmp_path), "adapt", "--customers", str(tmp_path / "c"))
    assert rc in (ExitCode.BAD_INPUT, ExitCode.DAMAGED)  # no meta-model, no registry
    assert len(err) == 1 and "metagan meta-train" in err[0]


def test_adapt_with_a_registry_but_no_meta_model_says_how_to_register_one_without_training(tmp_path, capsys,
                                                                                            monkeypatch):
    """A registry with no meta-model (the scale-out profile's servers, fresh): `metagan adapt` says
    how to register one, and how to register the shipped one rather than train one for minutes
    from scratch (the gate refuses such a model for most customers). It said "no meta-trained
    checkpoint at PATH. Make one with: metagan meta-train --preset small" (a probe of 2026-12-07)."""
    from metagan import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.create_store()
    (tmp_path / "c" / "x").mkdir(parents=True)
    rc, err = run(capsys, "--project", str(tmp_path), "adapt", "--customers", str(tmp_path / "c"))
    assert rc == ExitCode.BAD_INPUT and len(err) == 1, err
    assert err[0].startswith("error: no meta-model registered yet: `metagan meta-train` registers one")
    assert "meta.minutes: 0 and meta.init_checkpoint: metagan/pretrained/warp-small.pt" in err[0]


def test_a_registry_command_in_a_folder_that_is_no_project_says_so_and_how_to_point_at_one(tmp_path, capsys,
                                                                                             monkeypatch):
    """`metagan models` (any command that reads the registry) in a folder that holds no project at
    all said "damaged state ... restore it from backup", exit 5 (probe of 2026-12-06): it is the
    wrong folder, bad input, and the line says how to point at a project or start one. A project
    that lost its registry keeps its message."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("METAGAN_PROJECT", raising=False)
    for argv in (["models"], ["doctor"], ["generate", "--customer", "acme"], ["rollback", "--customer", "acme"],
                 ["schedule", "--customer", "acme", "--every", "7d"]):
        rc, err = run(capsys, *argv)
        assert rc == ExitCode.BAD_INPUT and len(err) == 1, (argv, err)
        assert f"{tmp_path} is not a metagan project" in err[0] and "--project DIR (or METAGAN_PROJECT=DIR)" in err[0]
        assert "`metagan demo`" in err[0] and "restore" not in err[0]
    assert not any(tmp_path.iterdir())
    (tmp_path / "mlflow").mkdir()  # a project whose registry is gone
    rc, err = run(capsys, "models")
    assert rc == ExitCode.DAMAGED and "restore it from backup" in err[0]


def test_method_choices_come_from_the_meta_learner_registry():
    method = next(a for a in subcommands()["meta-train"]._actions if a.dest == "method")
    assert method.choices == sorted(REGISTRY) and {"condgan", "reptile", "classic", "warp"} <= set(method.choices)
    assert "condgan" in subcommands()["meta-train"].format_help()


def test_init_writes_the_shipped_defaults_into_the_project_once(tmp_path, capsys, monkeypatch):
    """...and says when the task data the defaults name is not there (they name a checkout's
    sibling folder, which an installed metagan's project has not: an operator probe of 2026-12-06)."""
    from metagan.config import Params, load_params

    assert main(["--project", str(tmp_path), "init"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[2].startswith(f"data.source names {tmp_path.parent / 'shared'}/") and "which is not there" in said[2]
    written = tmp_path / "params.yaml"
    assert written.exists()
    monkeypatch.setenv("METAGAN_PROJECT", str(tmp_path))
    assert isinstance(load_params(), Params)
    rc, err = run(capsys, "init", "--project", str(tmp_path))
    assert rc == ExitCode.BAD_INPUT and "exists already" in err[0]


def test_init_makes_the_project_folder_it_names_and_only_init_does(tmp_path, capsys):
    """`metagan init --project DIR` with DIR not there said "DIR: no such folder" (an operator probe):
    init makes it, parents too, as `git init DIR` does; every other command still refuses it."""
    project = tmp_path / "new" / "fonts"
    rc, err = run(capsys, "models", "--project", str(project))
    assert rc == ExitCode.BAD_INPUT and f"{project}: no such folder" in err[0] and not project.parent.exists()
    assert main(["init", "--project", str(project)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"made the project folder {project}"
    assert (project / "params.yaml").exists() and (project / ".gitignore").exists()
    (tmp_path / "afile").write_text("")
    rc, err = run(capsys, "init", "--project", str(tmp_path / "afile"))
    assert rc == ExitCode.BAD_INPUT and "is not a folder" in err[0]


@pytest.mark.parametrize("git_first", [True, False], ids=["git-then-init", "init-then-git"])
def test_init_leaves_a_project_whose_git_takes_only_what_a_user_versions(tmp_path, capsys, monkeypatch, git_first):
    """`git add .` in a project made by `metagan init` took mlflow/ (the registry's database and model
    files), artifacts/ and out/: DVC's .gitignore held /data alone; and where git came after DVC
    (DVC without git never writes one) it took data/ and the local remote too (probe of
    2026-12-07). Now init's .gitignore keeps metagan's state and DVC's cache out; DVC's handling
    goes on (no second /data line), a user's own lines stay, and what a user versions is taken."""
    import subprocess

    from metagan import versioning

    def git(*args):
        return subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True, text=True).stdout

    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    project = tmp_path / "fonts"
    project.mkdir()
    if git_first:
        git("init", "-q")
        (project / ".gitignore").write_text("*.log")  # the user's own, without a last line break
    assert main(["--project", str(project), "init"]) == 0
    assert ".gitignore keeps them out of git: /data/ /mlflow/ /artifacts/ /out/ /.dvcstore/ /.dvc/cache/" \
        in capsys.readouterr().out
    for state in ("data/customers/acme/shots.npz", "mlflow/mlflow.db", "mlflow/artifacts/1/model.onnx",
                  "artifacts/meta/checkpoint.pt", "out/generated/acme/images.tar", "run.log"):
        (project / state).parent.mkdir(parents=True, exist_ok=True)
        (project / state).write_bytes(b"state")
    versioning.ensure_dvc_repo(project, ".dvcstore")  # as `metagan ingest` does
    versioning.track(project)
    versioning.push(project)
    if not git_first:
        git("init", "-q")
    git("add", ".")
    taken = set(git("diff", "--cached", "--name-only").split())
    assert taken == {".gitignore", "params.yaml", "data.dvc", ".dvcignore", ".dvc/config"} | (
        {".dvc/.gitignore"} if git_first else {"run.log"})  # DVC without git writes no .gitignore
    lines = (project / ".gitignore").read_text().splitlines()
    assert lines[0] == ("*.log" if git_first else lines[0]) and sum(line.strip("/") == "data" for line in lines) == 1


def test_doctor_names_the_gitignore_lines_a_project_made_without_init_lacks(tmp_path, capsys, monkeypatch):
    """A project started before `metagan init` wrote its .gitignore, or by `metagan demo` alone (init
    then refuses: params.yaml is there), lets `git add .` take the registry and the data. `metagan
    doctor` names the lines it lacks in a warning (the exit code stays), DVC's `/data` counting as
    `/data/`, and writes nothing: the file is the user's. Once they are there, it says nothing."""
    from metagan import tracking
    from metagan.project_gitignore import IGNORED, ignore_project_state

    monkeypatch.setenv("METAGAN_PROJECT", str(tmp_path))
    tracking.create_store()  # an empty registry, as meta-training starts one
    (tmp_path / ".gitignore").write_text("/data\n*.log\n")  # DVC's line and the user's own
    assert main(["doctor"]) == ExitCode.OK
    (warning,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert str(tmp_path / ".gitignore") in warning
    assert warning.endswith("add " + " ".join(line for line in IGNORED if line != "/data/"))
    assert (tmp_path / ".gitignore").read_text() == "/data\n*.log\n"
    ignore_project_state(tmp_path)  # what init writes
    assert main(["doctor"]) == ExitCode.OK
    assert "warning" not in capsys.readouterr().out
    (tmp_path / ".gitignore").unlink()  # no .gitignore, no git: nothing for `git add .` to take
    assert main(["doctor"]) == ExitCode.OK
    assert "warning" not in capsys.readouterr().out


def test_doctor_counts_what_git_ignores_already_by_the_projects_own_lines(tmp_path):
    """A checkout of this repository ignores mlflow/mlflow.db, fleet.db, artifacts/ and locks/ one by
    one (it keeps mlflow/start-server.sh) and DVC's cache by .dvc/.gitignore: `metagan doctor` there
    told a new user to add `/mlflow/` and three more lines (a probe of 2026-12-07), which would have
    ignored tracked files. What git ignores already is not missing; what it would take still is."""
    import shutil
    import subprocess

    from metagan.project_gitignore import IGNORED, missing_lines

    if shutil.which("git") is None:
        pytest.skip("no git")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/data/\n/artifacts/\n/out/\n/.dvcstore/\n/mlflow/mlflow.db\n"
                                         "/mlflow/fleet.db\n/mlflow/artifacts/\n")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    assert missing_lines(tmp_path) == ["/mlflow/"]  # its locks/ would be taken
    with (tmp_path / ".gitignore").open("a") as f:
        f.write("/mlflow/locks/\n")
    assert missing_lines(tmp_path) == []
    assert missing_lines(tmp_path / "elsewhere") == list(IGNORED)  # no .gitignore there, nothing ignored


def test_the_demo_refuses_the_scaleout_profile_before_any_work(monkeypatch, tmp_path, capsys):
    """`metagan demo` beside a cluster's environment (an operator probe of 2026-12-08) made the
    bundled sample the shared task data and the shipped meta-model the fleet's `current` one, and
    promoted the example customers in the shared registry: it now refuses there, exit 3, before
    any work, saying how to run it and how a cluster serves from the shipped meta-model."""
    import flows.pipeline

    for name, value in {"METAGAN_PROFILE": "scaleout", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
                        "PREFECT_API_URL": "http://127.0.0.1:9/api",
                        "METAGAN_INDEX_URL": "postgresql://metagan@127.0.0.1:9/metagan"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(flows.pipeline, "pipeline", lambda *a, **k: pytest.fail("the demo ran"))
    code = main(["--project", str(tmp_path), "demo"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.startswith("error: metagan demo runs on the embedded profile only: on scale-out it would make the "
                          "bundled sample the task data and the shipped meta-model `current` in the shared registry "
                          "(http://127.0.0.1:9)") and "METAGAN_PROFILE=embedded" in err
    assert list(tmp_path.iterdir()) == []


def test_the_demo_names_every_customer_it_did_not_serve_and_exits_partial(monkeypatch, tmp_path, capsys):
    """`metagan demo` keeps the exit codes of every command: a customer rejected, failed or refused
    by the gate is named with its reason and the demo exits 1 (found by a probe: it exited 0 and
    said nothing of a refused customer), and a customer served from some of its files hears which
    were left out and why, as from `metagan adapt` (the demo and `pipeline` said nothing of them:
    probe of 2026-12-07)."""
    from types import SimpleNamespace

    import flows.app.demo as demo
    import flows.pipeline
    from flows.ingest import Ingestion
    from flows.pipeline import PipelineResult
    from metagan.config import Params
    from metagan.customers import IngestResult
    from metagan.lifecycle.registry import Adaptation
    from metagan.lifecycle.promotion import Promotion, PromotionResult

    photo = SimpleNamespace(customer_id="white", images=None, converted=[("photo.jpg", "the paper made white")])
    data = Ingestion("d1", 3, {"bad": IngestResult("bad", False, error="customer 'bad': 0 usable image(s)"),
                               "white": IngestResult("white", True, 2, rejected=[("notes.png", "not an image")],
                                                     uploads=photo)})
    result = PipelineResult(data, SimpleNamespace(version="1"), None,
                            adapted=[Adaptation("white", True, "1"), Adaptation("broken", False, error="disk full")],
                            promoted=[PromotionResult("white", Promotion.REFUSED, "1", ("copy rate 1.00 > 0.20",))])
    monkeypatch.setattr(demo, "demo_params", lambda *a: Params())
    monkeypatch.setattr(flows.pipeline, "pipeline", lambda *a, **k: result)
    lines = []
    assert demo.run_demo(None, tmp_path, tmp_path / "out", 0.0, echo=lines.append) == ExitCode.PARTIAL
    text = "\n".join(lines)
    assert "rejected: customer 'bad'" in text and "broken: adaptation failed: disk full" in text
    assert "white: v1 not promoted: copy rate 1.00 > 0.20" in text
    assert "white: 1 upload(s) left out: notes.png: not an image" in text
    assert "white: 1 upload(s) converted: photo.jpg: the paper made white" in text
    monkeypatch.setattr(flows.pipeline, "pipeline", lambda *a, **k: result)  # `metagan pipeline`'s JSON says them too
    from flows.app.commands import cmd_pipeline

    assert cmd_pipeline(SimpleNamespace(customers=str(tmp_path), count=1, seed=0, out=None, start=None),
                        Params()) == ExitCode.PARTIAL
    said = json.loads(capsys.readouterr().out)
    assert said["left_out"] == {"white": [{"file": "notes.png", "reason": "not an image"}]}
    assert said["converted"] == {"white": [{"file": "photo.jpg", "done": "the paper made white"}]}


def test_doctor_checks_every_learners_settings(tmp_path, capsys):
    """`metagan doctor` checks `learners.*` too (the serving commands leave it to it and to the
    commands that train or adapt): a misspelt key is exit 3, naming it, before any state is read."""
    (tmp_path / "params.yaml").write_text("learners:\n  warp:\n    crsp: 3\n")
    rc, err = run(capsys, "--params", str(tmp_path / "params.yaml"), "doctor")
    assert rc == ExitCode.BAD_INPUT and "learners.warp.crsp" in err[-1]


def test_adapt_names_the_uploads_it_left_out_of_a_customer_it_served(monkeypatch, tmp_path, capsys):
    """A customer served from some of its files hears which were left out and why (a probe found
    the reasons only in the customer's report.json); it is not a failure: exit 0."""
    from types import SimpleNamespace

    import flows.adapt_customers
    import flows.ingest
    import flows.promote
    from flows.app.commands import cmd_adapt
    from flows.ingest import Ingestion
    from metagan.config import Params
    from metagan.customers import IngestResult
    from metagan.lifecycle.registry import Adaptation
    from metagan.lifecycle.promotion import Promotion, PromotionResult

    (tmp_path / "meta.pt").write_bytes(b"")
    (tmp_path / "up" / "mixed").mkdir(parents=True)
    params = Params().with_overrides(paths={"meta_checkpoint": str(tmp_path / "meta.pt")})
    monkeypatch.setattr("metagan.adapt.load_meta_model", lambda path: None)  # the flows are stand-ins too
    monkeypatch.setattr("metagan.lifecycle.meta_model.current_meta_version", lambda: "1")
    monkeypatch.setattr("metagan.lifecycle.registry.meta_checkpoint", lambda params, version: tmp_path / "meta.pt")
    rejected = [("notes.txt", "not an image"), ("b.png", "not an image")]
    photo = [("photo.jpg", "drawn on grey paper: the paper made white")]
    data = Ingestion("d1", 3, {"mixed": IngestResult("mixed", True, 5, rejected, uploads=SimpleNamespace(converted=photo))})
    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: data)
    monkeypatch.setattr(flows.adapt_customers, "adapt_customers_flow",
                        lambda p: lambda *a, **k: [Adaptation("mixed", True, "1")])
    monkeypatch.setattr(flows.promote, "promote", lambda *a, **k: [PromotionResult("mixed", Promotion.PROMOTED, "1")])
    rc = cmd_adapt(SimpleNamespace(customers=str(tmp_path / "up"), steps=None), params)
    assert rc == ExitCode.OK
    out = capsys.readouterr().out
    assert "mixed: 2 upload(s) left out: notes.txt, b.png: not an image" in out
    assert "mixed: 1 upload(s) converted: photo.jpg: drawn on grey paper: the paper made white" in out
    # a customer whose adaptation failed has no version to name (it read "version None (new), not promoted")
    full = "customer 'mixed': cannot write .../model.onnx: No space left on device"
    monkeypatch.setattr(flows.adapt_customers, "adapt_customers_flow",
                        lambda p: lambda *a, **k: [Adaptation("mixed", False, error=full)])
    rc = cmd_adapt(SimpleNamespace(customers=str(tmp_path / "up"), steps=None), params)
    said = capsys.readouterr()
    assert rc == ExitCode.PARTIAL and f"  mixed: not adapted: {full}" in said.out and "None" not in said.out
    assert f"  FAILED {full}" in said.err
    # an error that does not name its customer (onnxruntime's, a bug's) is named in the FAILED line
    # (it read "FAILED InvalidGraph: ...", a probe of 2026-12-07)
    monkeypatch.setattr(flows.adapt_customers, "adapt_customers_flow",
                        lambda p: lambda *a, **k: [Adaptation("mixed", False, error="InvalidGraph: no Op Tanx")])
    cmd_adapt(SimpleNamespace(customers=str(tmp_path / "up"), steps=None), params)
    assert "  FAILED mixed: InvalidGraph: no Op Tanx" in capsys.readouterr().err


def test_ingest_names_the_uploads_it_left_out_of_a_customer_it_ingested(monkeypatch, tmp_path, capsys):
    """As adapt does: `metagan ingest` said "5 shots" of a customer with a file rejected, the reason
    only in its report.json (probe of 2026-12-06); not a failure: exit 0."""
    from types import SimpleNamespace

    import flows.ingest
    from flows.app.commands import cmd_ingest
    from flows.ingest import Ingestion
    from metagan.config import Params
    from metagan.customers import IngestResult

    (tmp_path / "up" / "mixed").mkdir(parents=True)
    rejected = [("notes.txt", "not an image"), ("big.png", "exceeds the limit")]
    data = Ingestion("d1", 3, {"mixed": IngestResult("mixed", True, 5, rejected), "clean": IngestResult("clean", True, 2)})
    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: data)
    rc = cmd_ingest(SimpleNamespace(customers=str(tmp_path / "up"), customer=None, source=None), Params())
    out = capsys.readouterr().out
    assert rc == ExitCode.OK
    assert "  mixed: 5 shots (2 upload(s) left out: notes.txt: not an image; big.png: exceeds the limit)" in out
    assert "  clean: 2 shots\n" in out


def test_ingest_of_a_folder_holding_no_customer_folder_says_so_as_adapt_does(tmp_path, capsys):
    """`metagan ingest --customers DIR` over a folder of no customer folder exited 0 saying nothing
    of customers (a new user's walk, 2026-12-07); adapt said so already: bad input, exit 3."""
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "0.png").write_bytes(b"")
    assert main(["ingest", "--customers", str(tmp_path / "up")]) == ExitCode.BAD_INPUT
    assert "holds no customer folder" in capsys.readouterr().err


def test_ingest_says_which_uploads_it_converted(monkeypatch, tmp_path, capsys):
    """A customer's photographed or inverted drawings are used converted: `metagan ingest` says so
    beside the shots (it was only in report.json), the files sharing what was done named together."""
    from types import SimpleNamespace

    import numpy as np

    import flows.ingest
    from flows.app.commands import cmd_ingest
    from flows.ingest import Ingestion
    from metagan.config import Params
    from metagan.customers import IngestResult
    from metagan.upload_conversions import INVERTED, WHITENED
    from metagan.uploads import CustomerUploads

    (tmp_path / "up" / "phone").mkdir(parents=True)
    uploads = CustomerUploads("phone", np.zeros((3, 4, 4, 1), np.uint8), ["a.jpg", "b.jpg", "c.png"],
                              converted=[("a.jpg", WHITENED), ("b.jpg", WHITENED), ("c.png", INVERTED)])
    data = Ingestion("d1", 3, {"phone": IngestResult("phone", True, 3, uploads=uploads)})
    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: data)
    assert cmd_ingest(SimpleNamespace(customers=str(tmp_path / "up"), customer=None, source=None), Params()) == 0
    assert f"  phone: 3 shots (3 converted: a.jpg, b.jpg: {WHITENED}; c.png: {INVERTED})\n" in capsys.readouterr().out


@pytest.fixture
def three_customers(tmp_path, monkeypatch):
    """A project that knows acme (a registered model), beta (shots ingested, no model yet) and, for
    ingestion, gamma (an upload folder, nothing else)."""
    from metagan import model_names, store, tracking

    monkeypatch.setenv("METAGAN_PROJECT", str(tmp_path))
    # this project's registry, whatever an earlier test of the session pointed MLflow at
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    tracking.create_store()
    store.client().create_registered_model(model_names.customer_model_name("acme"))
    (tmp_path / "data" / "customers" / "beta").mkdir(parents=True)
    (tmp_path / "data" / "customers" / "beta" / "shots.npz").write_bytes(b"shots")
    (tmp_path / "uploads" / "gamma").mkdir(parents=True)
    return tmp_path


def test_a_customer_the_project_does_not_know_gets_one_message_from_every_command(three_customers, capsys,
                                                                                   monkeypatch):
    """A typo'd customer name is "unknown customer", with the names known and the closest, exit 3,
    before any work, whatever the command: they said four different things (no production model, no
    candidate to promote, no previous version, no registered model 'metagan-customer-acm'; ingest
    rejected it as a missing folder, exit 1), none of them "unknown" (probe of 2026-12-06)."""
    import flows.ingest

    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: pytest.fail("ingested for an unknown customer"))
    swept = []
    monkeypatch.setattr("flows.ephemeral.stop_orphaned_servers", lambda: swept.append(1))
    said = "error: unknown customer 'acm': no uploads or registered model of that name (known: acme, beta{}; " \
           "did you mean 'acme'?)"
    for argv in (["generate", "--customer", "acm"], ["generate", "--customer", "acm", "--alias", "candidate"],
                 ["generate", "--customer", "acm", "--version", "2"], ["promote", "--customer", "acm"],
                 ["rollback", "--customer", "acm"], ["schedule", "--customer", "acm", "--every", "7d"]):
        assert run(capsys, *argv) == (ExitCode.BAD_INPUT, [said.format("")]), argv
    uploads = str(three_customers / "uploads")
    assert run(capsys, "ingest", "--customers", uploads, "--customer", "acm") == \
        (ExitCode.BAD_INPUT, [said.format(", gamma")])
    assert not swept


def test_a_prefect_home_that_cannot_be_made_stops_a_flow_command_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    """Guarantee: a flow command whose Prefect server would keep its database in a PREFECT_HOME that
    cannot be made (its parent missing) or is a file stops before any work, exit 6, in one line naming
    the folder; a command that starts no Prefect (`generate`) is not held back by it. Until a probe of
    2026-12-07 Prefect only warned, and `metagan ingest` ended after 3 minutes with 9,000 lines of
    tracebacks and exit 70, "a bug"."""
    import flows.ingest

    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: pytest.fail("ingested without a Prefect home"))
    monkeypatch.setattr("flows.ephemeral.stop_orphaned_servers", lambda: pytest.fail("prefect's servers swept"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uploads").mkdir()
    home = tmp_path / "nope" / "sub" / "prefect"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    assert run(capsys, "ingest", "--customers", str(tmp_path / "uploads")) == (ExitCode.FILE_SYSTEM, [
        f"error: PREFECT_HOME {home} (where Prefect keeps the database of its flow runs) cannot be created: its "
        f"parent folder {home.parent} does not exist: create it, or set PREFECT_HOME to a folder that can be written"])
    assert not (tmp_path / "nope").exists()
    (tmp_path / "home-file").write_text("")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home-file"))
    rc, err = run(capsys, "ingest", "--customers", str(tmp_path / "uploads"))
    assert rc == ExitCode.FILE_SYSTEM and err == [
        f"error: PREFECT_HOME {tmp_path / 'home-file'} (where Prefect keeps the database of its flow runs) is a "
        "file, not a folder: set PREFECT_HOME to a folder that can be written"]
    rc, err = run(capsys, "generate", "--model", str(tmp_path / "no.onnx"))  # no Prefect: its own error
    assert rc != ExitCode.FILE_SYSTEM and "PREFECT_HOME" not in " ".join(err), err
    # a full disk under it: its server failed to start, 3 minutes and exit 70 (a probe of 2026-12-07)
    import os as os_module

    full = os_module.statvfs_result((4096, 4096, 1000, 10, 10, 1000, 10, 10, 0, 255))
    monkeypatch.setattr("flows.ephemeral.os.statvfs", lambda path: full)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    assert run(capsys, "ingest", "--customers", str(tmp_path / "uploads")) == (ExitCode.FILE_SYSTEM, [
        f"error: PREFECT_HOME {tmp_path / 'prefect-home'} (where Prefect keeps the database of its flow runs) is on a "
        "full disk (0.0 MB free of the 16 MB it needs): No space left on device: free some space, or set PREFECT_HOME "
        "to a folder that can be written"])


def test_a_customer_whose_uploads_were_refused_is_told_so_not_unknown(three_customers, capsys, monkeypatch):
    """Guarantee: `generate` (or `promote`, `rollback`, `schedule`) for a customer whose only ingestion
    refused its uploads says so, exit 3: "its uploads were refused at its last ingestion", read from
    the fleet index's row; it said "no uploads or registered model of that name", though the customer
    had uploaded (probe of 2026-12-07). A name the index never heard of is still unknown."""
    from metagan.customers import ingest_customer
    from metagan.lifecycle import fleet

    folder = three_customers / "uploads" / "delta"
    folder.mkdir()  # nothing usable in it (0 usable images)
    refused = ingest_customer(folder, three_customers / "data" / "customers", 32, 1, 1, 20, 10**7)
    assert not refused.ok
    fleet.record_ingestion([refused])  # as the ingest flow records it
    monkeypatch.setattr("flows.ephemeral.stop_orphaned_servers", lambda: None)
    said = ("error: customer 'delta' has no model and no shots: its uploads were refused at its last ingestion "
            "(`metagan ingest --customers DIR --customer delta` says why)")
    for argv in (["generate", "--customer", "delta"], ["promote", "--customer", "delta"],
                 ["schedule", "--customer", "delta", "--every", "7d"]):
        assert run(capsys, *argv) == (ExitCode.BAD_INPUT, [said]), argv
    rc, err = run(capsys, "generate", "--customer", "deltb")
    assert rc == ExitCode.BAD_INPUT and err[0].startswith("error: unknown customer 'deltb'"), err


def test_an_unknown_name_among_several_to_ingest_is_rejected_alone(three_customers, capsys, monkeypatch):
    """`ingest --customer gamma --customer acm`: an upload service's batch with one typo ingests the
    others and rejects the unknown one alone, with the unknown-customer message, exit 1 (partial):
    one bad name never stops the others. Only a command whose every name is unknown is refused
    before any work (exit 3, the test above)."""
    import flows.ingest
    from flows.ingest import Ingestion, customer_folders
    from metagan.customers import IngestResult

    uploads, ingested_root = three_customers / "uploads", three_customers / "data" / "customers"

    def ingest(params, customers_dir, source, folders):  # the flow's choice of folders, no ingestion
        found, rejected = customer_folders(customers_dir, folders, ingested_root)
        results = rejected + [IngestResult(f.name, ok=True, shots=1) for f in found]
        return Ingestion("d1", 3, {r.customer_id: r for r in results})

    monkeypatch.setattr(flows.ingest, "ingest", ingest)
    assert main(["ingest", "--customers", str(uploads), "--customer", "gamma", "--customer", "acm"]) == \
        ExitCode.PARTIAL
    said = capsys.readouterr().out
    assert "  gamma: 1 shots" in said and "  acm: REJECTED unknown customer 'acm'" in said, said
    found, rejected = customer_folders(uploads, ["gamma", "acm", "beta"], ingested_root)
    assert [f.name for f in found] == ["gamma"]
    assert [r.error for r in rejected] == [  # beta is known (its shots): its folder is what is missing
        "unknown customer 'acm': no uploads or registered model of that name (known: acme, beta, gamma; did you "
        "mean 'acme'?)", f"customer 'beta': its upload folder {uploads / 'beta'} does not exist"]


def test_a_customer_the_project_knows_keeps_what_its_command_says(three_customers, capsys, monkeypatch):
    """Known without a model (uploads only, or shots ingested) is not unknown: ingesting a new
    customer's folder goes ahead, and the registry commands say what that customer lacks."""
    import flows.ingest

    ingested = []
    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: ingested.append(k["folders"]) or _no_ingestion())
    assert main(["ingest", "--customers", str(three_customers / "uploads"), "--customer", "gamma",
                 "--customer", "acme", "--customer", "beta"]) == ExitCode.OK
    assert ingested == [["gamma", "acme", "beta"]]
    assert run(capsys, "generate", "--customer", "beta")[1] == [
        "error: customer 'beta' has no production model (run adapt and promote first)"]
    assert run(capsys, "schedule", "--customer", "beta", "--every", "7d")[1] == [
        "error: customer 'beta' has no registered model yet to schedule (metagan adapt registers it)"]
    assert run(capsys, "rollback", "--customer", "acme")[1] == [
        "error: customer 'acme' has no previous production version to roll back to"]


def _no_ingestion():
    from flows.ingest import Ingestion

    return Ingestion("d1", 3)


def test_the_unknown_customer_message_lists_a_few_names_and_the_closest():
    from metagan.known_customers import SHOWN, unknown_customer_message

    many = ["acme-corp"] + [f"client-{i:03d}" for i in range(40)]
    said = unknown_customer_message("acme-crop", many)
    assert f"(known: {', '.join(many[:SHOWN])} and {41 - SHOWN} more; did you mean 'acme-corp'?)" in said
    assert "did you mean" not in unknown_customer_message("zzz", many)
    # a name in another case is a typo of the known one(s) (difflib offered none: probe of 2026-12-07)
    assert unknown_customer_message("GOOD", ["Acme", "acme", "good"]).endswith("did you mean 'good'?)")
    assert unknown_customer_message("ACME", ["Acme", "acme", "good"]).endswith("did you mean 'Acme' or 'acme'?)")
    assert "this project knows no customer yet" in unknown_customer_message("acme", [])


def test_whether_a_customer_is_known_is_exact_past_the_names_a_server_lists(three_customers, monkeypatch):
    """The unknown-customer message reads at most LISTED_FROM_A_SERVER registered names from a
    tracking server; whether a name is known is asked of the registry by that name, so a customer
    registered past the first 1,000 is known, on the embedded registry and through MLflow's client
    (its pages, a server's path). The message, where the server's list was cut, says "and more",
    not a count: it said "and 992 more" of 1,052 (probe of 2026-12-07)."""
    import sqlite3

    from metagan import mlflow_sqlite, model_names
    from metagan.known_customers import LISTED_FROM_A_SERVER, check_known, unknown_among

    db = three_customers / "mlflow" / "mlflow.db"
    with sqlite3.connect(db) as con:  # 1,050 more registered models, as MLflow lays them out, in one statement
        others = [r[1] for r in con.execute("PRAGMA table_info(registered_models)") if r[1] != "name"]
        con.executemany(f"INSERT INTO registered_models (name, {', '.join(others)}) SELECT ?, {', '.join(others)} "
                        "FROM registered_models WHERE name = ?",
                        [(model_names.customer_model_name(f"c{i:04d}"), model_names.customer_model_name("acme"))
                         for i in range(1050)])
    ingested = three_customers / "data" / "customers"
    last = "c1049"  # MLflow lists names in order: past the first LISTED_FROM_A_SERVER
    assert LISTED_FROM_A_SERVER < 1050
    assert check_known(last, ingested) == last and unknown_among([last, "c1050"], ingested) == ["c1050"]
    with pytest.raises(NotFound, match=r"known: acme, beta, c0000, .*, c0005 and 1044 more; did you mean"):
        check_known("c1050", ingested)
    monkeypatch.setattr(mlflow_sqlite, "database_path", lambda uri: None)  # MLflow's client, as for a server
    assert check_known(last, ingested) == last and unknown_among([last, "c1050"], ingested) == ["c1050"]
    with pytest.raises(NotFound, match=r"known: acme, beta, c0000, .*, c0005 and more; did you mean"):
        check_known("c1050", ingested)


def test_adapt_over_a_folder_without_customer_folders_is_bad_input_not_a_quiet_success(monkeypatch, tmp_path):
    """`metagan adapt --customers uploads/alice` (one customer's folder, not their parent) or an empty
    folder adapted nothing, said nothing and exited 0 (probe of 2026-12-06): bad input, naming the
    parent when the folder holds files."""
    from types import SimpleNamespace

    import flows.ingest
    from flows.app.commands import cmd_adapt
    from metagan.config import Params

    (tmp_path / "meta.pt").write_bytes(b"")
    params = Params().with_overrides(paths={"meta_checkpoint": str(tmp_path / "meta.pt")})
    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: pytest.fail("ingested nothing"))
    alice = tmp_path / "uploads" / "alice"
    alice.mkdir(parents=True)
    with pytest.raises(BadInput, match="holds no customer folder") as e:
        cmd_adapt(SimpleNamespace(customers=str(alice), steps=None), params)
    assert "file(s)" not in str(e.value)
    (alice / "1.png").write_bytes(b"png")
    (alice / ".DS_Store").write_bytes(b"")
    with pytest.raises(BadInput, match=f"it holds 1 file\\(s\\): if it is one customer's folder, give its parent "
                                       f"folder {tmp_path / 'uploads'}"):
        cmd_adapt(SimpleNamespace(customers=str(alice), steps=None), params)


def test_adapt_from_a_meta_checkpoint_that_does_not_load_stops_once_in_one_line(monkeypatch, tmp_path):
    """A meta checkpoint replaced by garbage (or by another kind of checkpoint) is the project's
    damage, said once, in one line, before any upload is ingested: before, every customer failed
    with torch's paragraph (whose first line advises loading the file unsafely) and adapt exited 1,
    "partial" (probe of 2026-12-06)."""
    from types import SimpleNamespace

    import flows.ingest
    from flows.app.commands import cmd_adapt
    from metagan.checkpoint import CheckpointError
    from metagan.config import PROJECT_ROOT, Params
    from metagan.errors import Failure, kind_of

    (tmp_path / "up" / "acme").mkdir(parents=True)
    params = Params().with_overrides(paths={"meta_checkpoint": str(tmp_path / "meta.pt")})
    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: pytest.fail("ingested from a damaged meta-model"))
    # the registered version's file is this one (a version registered before checksums: none to compare)
    monkeypatch.setattr("metagan.lifecycle.meta_model.current_meta_version", lambda: "1")
    monkeypatch.setattr("metagan.lifecycle.registry._registered_checkpoint_sha", lambda registry, version: None)
    for content, words in ((b"garbage\n", "not a checkpoint torch loads safely (Unsupported operand 103)"),
                           ((PROJECT_ROOT / "metagan/pretrained/evaluator.pt").read_bytes(), "is not a 'metagan/meta-checkpoint/1'")):
        (tmp_path / "meta.pt").write_bytes(content)
        with pytest.raises(CheckpointError) as e:
            cmd_adapt(SimpleNamespace(customers=str(tmp_path / "up"), steps=None), params)
        assert words in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)
        assert "weights_only" not in str(e.value) and kind_of(e.value) is Failure.DAMAGED


@pytest.mark.parametrize("command", [["models"], ["doctor"], ["generate", "--customer", "x"], ["ingest"]])
def test_the_scaleout_profile_without_its_servers_stops_every_command(monkeypatch, capsys, command):
    """With `METAGAN_PROFILE=scaleout` and its servers not named, every command stops at once,
    naming what is missing: the registry-only commands and the batch job too, which a walkthrough
    of docs/DEPLOY.md found quietly using the embedded SQLite registry (they need no Prefect server,
    so only the stores are asked of them)."""
    for name in ("MLFLOW_TRACKING_URI", "METAGAN_INDEX_URL", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("METAGAN_PROFILE", "scaleout")
    rc, err = run(capsys, *command)
    assert rc == ExitCode.BAD_INPUT and "profile 'scaleout' needs MLFLOW_TRACKING_URI" in err[-1]
    if command != ["ingest"]:  # (whether Prefect's API is named for ingest depends on Prefect's profile)
        assert "PREFECT_API_URL" not in err[-1]
    # the MLflow backend's SQLAlchemy URL copied into the index's: set, but the wrong kind, and said so
    monkeypatch.setenv("METAGAN_INDEX_URL", "postgresql+psycopg://metagan@db/mlflow")
    rc, err = run(capsys, *command)
    assert rc == ExitCode.BAD_INPUT and "METAGAN_INDEX_URL=postgresql://<user>@<host>/<database>, not " \
        "postgresql+psycopg://" in err[-1]


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "unbuffered"])
def test_output_into_a_pipe_nobody_reads_ends_quietly_with_141(tmp_path, unbuffered):
    """Guarantee: `metagan ... | head -1`: when the reader of stdout has gone, the command stops
    without a traceback and exits 141 (128 + SIGPIPE, as a Unix tool killed by it), not 70 or 120,
    whether the output was written at once or was still in Python's buffer at the end."""
    import subprocess
    import sys

    from metagan.config import PROJECT_ROOT

    reader, writer = os.pipe()
    os.close(reader)
    try:
        proc = subprocess.run([sys.executable, "-m", "flows.app.cli", "--project", str(tmp_path), "init"],
                              cwd=PROJECT_ROOT, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(writer)
    assert (proc.returncode, proc.stderr) == (ExitCode.BROKEN_PIPE, "")


class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_a_closed_stdout_is_not_reported_as_a_bug(tmp_path, monkeypatch, capsys):
    """Guarantee: a BrokenPipeError writing the command's output ends main with 141 and nothing on
    stderr."""
    import sys

    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["--project", str(tmp_path), "init"]) == ExitCode.BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""


def test_a_broken_connection_while_stdout_is_fine_is_still_a_bug(tmp_path, monkeypatch, capsys):
    """Guarantee: a BrokenPipeError that is not stdout's (a server's socket) keeps its traceback and
    exit 70: only a reader that went away is quiet."""
    import sys

    def broken_connection(args, params):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("flows.app.cli.build_parser", _parser_with(init=broken_connection))
    with open(tmp_path / "out.txt", "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        assert main(["init"]) == ExitCode.INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_a_killed_runs_prefect_server_is_stopped_by_the_next_flow_command(tmp_path):
    """Guarantee: an ephemeral Prefect API server whose metagan run was SIGKILLed (a probe found
    five, 230 MB each, living on) is stopped by the next command that starts one; a server whose
    run is alive, whatever its parent (a later probe's `metagan serve` ran as a container's
    process 1), and a server metagan did not start are left alone. The servers here are
    stand-ins with the same command line, marked as a run marks the servers it starts."""
    import os
    import subprocess
    import sys

    from flows.ephemeral import OWNER_ENV, SERVER_APP, orphaned_servers, owner_mark, stop_orphaned_servers

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_owner = f"{gone.stdout.strip()}:1"  # a process that has exited (and a start time no process has)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)", SERVER_APP.decode()]
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    servers = {"orphan": subprocess.Popen(sleeper, env=env | {OWNER_ENV: dead_owner}),
               "alive": subprocess.Popen(sleeper, env=env | {OWNER_ENV: owner_mark(os.getpid())}),
               "not ours": subprocess.Popen(sleeper, env=env)}
    try:
        assert [p for p in orphaned_servers() if p in {s.pid for s in servers.values()}] == [servers["orphan"].pid]
        assert stop_orphaned_servers() >= 1
        assert servers["orphan"].wait(10) == -15  # SIGTERM
        assert servers["alive"].poll() is None and servers["not ours"].poll() is None
    finally:
        for s in servers.values():
            s.kill()


def test_a_server_started_the_prefect_way_dies_with_its_command_killed_with_its_whole_group(tmp_path):
    """Guarantee: the private Prefect server a flow command starts (through Prefect's server
    module, as `out_of_the_terminals_reach` patched it) is stopped by the kernel when the command
    is SIGKILLed with its whole process group (the server, in a group of its own, was left running
    until the next flow command, a known limit until 2026-12-07), even when the thread that asked
    for it ended long before: the parent-death signal follows the starting thread, so the server
    is started by a thread that lives as long as the process. Here the "server" is a sleeper
    started by a short-lived thread through the same patched ``subprocess``."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, threading, time\n"
        "from flows.ephemeral import out_of_the_terminals_reach\n"
        "from prefect.server.api import server\n"
        "assert out_of_the_terminals_reach()\n"
        "started = []\n"
        "t = threading.Thread(target=lambda: started.append(server.subprocess.Popen(\n"
        "    [sys.executable, '-c', 'import time; time.sleep(120)'])))\n"
        "t.start(); t.join()\n"
        "print(started[0].pid, flush=True)\n"
        "time.sleep(120)\n")
    command = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               start_new_session=True, cwd=str(Path(__file__).parent.parent))
    child = int(command.stdout.readline())
    try:
        assert os.getpgid(child) == child != os.getpgid(command.pid)  # a group of its own
        time.sleep(0.5)
        assert Path(f"/proc/{child}").exists()  # the starting thread's end did not stop it
        os.killpg(command.pid, signal.SIGKILL)
        command.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(child):
            time.sleep(0.05)
        assert not _running(child)
    finally:
        for pid in (child, command.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _running(pid: int) -> bool:
    """The process is there and not a zombie (an orphan is reaped by init, not by us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_ingest_says_each_customer_on_one_line_whatever_its_folder_name_or_link_holds(monkeypatch, tmp_path, capsys):
    """A customer folder named with a line break (refused: no id) and a dangling link where a folder
    goes whose target holds one each split `metagan ingest`'s output, forging a line ("FAILED
    customer 'good': ..."; probe of 2026-12-07): both are shown escaped, one line per customer."""
    from types import SimpleNamespace

    from PIL import Image

    import flows.ingest
    from flows.app.commands import cmd_ingest
    from flows.ingest import Ingestion, customer_folders, ingest_one
    from metagan.config import Params

    up = tmp_path / "up"
    (up / "multi\nFAILED customer 'good': forged").mkdir(parents=True)
    Image.new("L", (8, 8), 255).save(up / "multi\nFAILED customer 'good': forged" / "a.png")
    (up / "acme").symlink_to("gone\nFAILED customer 'good': forged")
    params = Params().with_overrides(paths={"ingested_customers": str(tmp_path / "ingested")})
    found, results = customer_folders(up)  # what the ingest flow runs, without its DVC
    results += [ingest_one.fn(f, params) for f in found]
    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: Ingestion("d1", 3, {r.customer_id: r for r in results}))
    rc = cmd_ingest(SimpleNamespace(customers=str(up), customer=None, source=None), params)
    lines = capsys.readouterr().out.splitlines()
    assert rc == ExitCode.PARTIAL
    assert len(lines) == 3 and all(line.startswith("  ") for line in lines[1:]), lines
    assert "  acme: REJECTED customer 'acme': its upload folder" in lines[1] and \
        "a symbolic link to nothing (gone\\nFAILED customer 'good': forged)" in lines[1], lines
    assert lines[2].startswith("  multi\\nFAILED customer 'good': forged: REJECTED customer "), lines


def test_a_registry_held_locked_by_another_process_is_service_unavailable_in_one_line(three_customers, capsys,
                                                                                         monkeypatch):
    """A registry another process held locked past the waits (a minute and more) ended `models`,
    `generate`, `promote`, `schedule`, `doctor` and `adapt` in a bug's traceback, exit 70 (a probe of
    2026-12-07), where SQLite's "database is locked" came up bare (the embedded registry's direct
    reads) or under SQLAlchemy's error (opening MLflow's store): it is exit 4 in one line, as a lock
    that stayed held is. (The waits themselves are SQLite's and MLflow's, too long for a test.)"""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    def locked(*a, **k):
        raise sqlite3.OperationalError("database is locked")

    def locked_under_sqlalchemy(*a, **k):
        try:
            locked()
        except sqlite3.OperationalError as e:
            raise OperationalError("SELECT name FROM sqlite_master", {}, e) from e

    monkeypatch.setattr("metagan.mlflow_sqlite.read_version", locked)
    monkeypatch.setattr("metagan.lifecycle.listings.model_rows", locked_under_sqlalchemy)
    said = ("error: a database stayed locked by another process past its wait (database is locked): another metagan "
            "command, or a tool holding mlflow/mlflow.db or the fleet index open, is writing to it; retry when it ends")
    assert run(capsys, "generate", "--customer", "acme") == (ExitCode.UNAVAILABLE, [said])
    assert run(capsys, "models") == (ExitCode.UNAVAILABLE, [said])


def test_a_sigterm_once_the_commands_work_is_over_lets_its_exit_hooks_finish():
    """A SIGTERM while a finished command's exit hooks run (they stop its private Prefect server):
    the handler raised SystemExit inside the hook, which Python printed as an "Exception ignored"
    block and cut the hook short (a probe of 2026-12-07). Now the hooks finish and the command's own
    exit code stands; before its work is over a SIGTERM still ends it, 143."""
    import signal
    import subprocess
    import sys

    from flows.app import cli
    from metagan.config import PROJECT_ROOT

    script = ("import atexit, signal, sys, time\n"
              "from flows.app import cli\n"
              "signal.signal(signal.SIGTERM, cli._end_on_signal)\n"
              "atexit.register(lambda: (print('hook', flush=True), time.sleep(2), print('hook done', flush=True)))\n"
              "sys.exit(cli.main(['--version']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line == "hook\n":
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    out = "".join(lines)
    assert "hook done" in out and "Exception ignored" not in out, out
    cli._ENDED.clear()  # a command at work
    with pytest.raises(SystemExit) as ended:
        cli._end_on_signal(signal.SIGTERM, None)
    assert ended.value.code == 128 + signal.SIGTERM


def test_a_night_whose_every_customer_met_a_bug_exits_70_and_a_locked_database_is_one_line(capsys):
    """A night where every customer failed with the same bug exited 1, "partial", with no word of
    a bug (README: 70); a registry locked past the wait was three lines of SQLAlchemy's a customer
    where one command says one (probes of 2026-12-08)."""
    import sqlite3

    import sqlalchemy.exc

    from flows.app.batch_commands import _night_exit_code
    from metagan.errors import LOCKED_DATABASE_SAID
    from metagan.lifecycle.batches import failed_batch

    bug = [failed_batch(c, ImportError("cannot import name 'x'")) for c in ("a", "b")]
    assert _night_exit_code(bug) == 70
    assert "every customer due failed with a bug" in capsys.readouterr().err
    locked = sqlalchemy.exc.OperationalError("SELECT name FROM sqlite_master", {},
                                             sqlite3.OperationalError("database is locked"))
    batch = failed_batch("a", locked)
    assert batch.error == LOCKED_DATABASE_SAID and "\n" not in batch.error
    assert _night_exit_code([batch]) == 4
