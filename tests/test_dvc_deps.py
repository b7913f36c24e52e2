"""dvc.yaml's stages depend on the code they run: each stage's ``deps`` cover every module its entry
point imports, transitively, imports inside functions included, so a new module (or a metric's) cannot be
forgotten and ``dvc repro`` reruns what a code change affects."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import yaml

from metagan.config import PROJECT_ROOT
from tests.test_layers import _names, modules

DYNAMIC_PACKAGES = {"metagan.meta"}
"""Packages that import every module of their folder at run time (the learner registry), which no
import statement names."""


@cache
def _our_modules() -> dict[str, Path]:
    return modules()


def module_file(name: str) -> Path | None:
    return _our_modules().get(name)


def imported(node: ast.AST, package: str) -> set[str]:
    """Our modules an AST imports anywhere (test_layers' reading of import statements)."""
    return {m for n in ast.walk(node) for m in _names(n, package) if module_file(m)}


def closure(start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        todo += imported(ast.parse(path.read_text()), package)
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]  # parents' __init__
        if name in DYNAMIC_PACKAGES:
            todo += [f"{name}.{p.stem}" for p in path.parent.glob("*.py") if p.stem != "__init__"]
    return seen


def stage_modules(stage: str) -> set[str]:
    """What ``python -m flows.stages STAGE`` imports: the module's own imports, its ``main``'s and the
    stage function's."""
    tree = ast.parse((PROJECT_ROOT / "flows" / "stages.py").read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    start = imported(top, "flows") | imported(functions["main"], "flows") \
        | imported(functions[stage.replace("-", "_") + "_stage"], "flows") | {"flows.stages"}
    return closure(start)


def test_every_stage_depends_on_every_module_it_runs():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    checked = 0
    for name, stage in stages.items():
        if stage.get("always_changed"):
            continue  # runs on every repro anyway
        assert stage["cmd"].startswith("python -m flows.stages "), name
        deps = [PROJECT_ROOT / d for d in stage.get("deps", [])]
        modules = stage_modules(stage["cmd"].split()[-1])
        missing = sorted(m for m in modules
                         if not any(module_file(m) == d or d in module_file(m).parents for d in deps))
        assert not missing, f"dvc.yaml stage {name} runs modules its deps miss: {missing}"
        checked += 1
    assert checked == 3


def test_the_stages_say_metagan_warnings_on_the_console_as_the_command_does(monkeypatch, capsys):
    """`dvc repro` trained on the bundled sample without the warning `metagan meta-train` prints (a
    new user's walk, 2026-12-07): the stages set up the console as the command does."""
    import logging

    import flows.common
    from flows import stages

    monkeypatch.setattr(flows.common, "load", lambda path: None)
    monkeypatch.setattr(stages, "production_stage",
                        lambda params: logging.getLogger("metagan.lifecycle").warning("training on the bundled sample"))
    assert stages.main("production") == 0
    assert "warning: training on the bundled sample" in capsys.readouterr().err
