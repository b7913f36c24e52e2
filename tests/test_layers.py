"""The house has four floors and every import points down: application (the ``metagan`` command,
the demo) -> flows (Prefect glue) -> lifecycle (register, gate, promote, roll back) -> library core.
A module's floor is its folder's; imports are read from the source with ``ast``, lazy imports
inside functions included."""

import ast
from pathlib import Path

from metagan.config import PROJECT_ROOT

FLOOR_FOLDERS = {"flows/app": "application", "flows": "flows", "metagan/lifecycle": "lifecycle", "metagan": "core"}
"""Each floor is a folder (with everything under it that no deeper floor's folder claims)."""
FLOORS = ["core", "lifecycle", "flows", "application"]


def floor(module: str) -> str | None:
    folder = module.replace(".", "/")
    homes = [f for f in FLOOR_FOLDERS if folder == f or folder.startswith(f + "/")]
    return FLOOR_FOLDERS[max(homes, key=len)] if homes else None


def modules() -> dict[str, Path]:
    found = {}
    for package in ("metagan", "flows"):
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(module: str, path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if top_level_only and isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks count
            out |= {n for child in node.body for n in _names(child, package)}
        out |= _names(node, package)
    return out


def _names(node, package: str) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        return {base} | {f"{base}.{a.name}" for a in node.names}
    return set()


def test_no_import_points_up_a_floor():
    upward = []
    for module, path in modules().items():
        mine = FLOORS.index(floor(module))
        for name in imports(module, path):
            theirs = floor(name)
            if theirs is not None and FLOORS.index(theirs) > mine:
                upward.append(f"{module} ({floor(module)}) imports {name} ({theirs})")
    assert not upward, "\n".join(sorted(upward))


def test_the_library_never_imports_prefect():
    offenders = [m for m, p in modules().items() if floor(m) in ("core", "lifecycle")
                 and any(n == "prefect" or n.startswith("prefect.") for n in imports(m, p))]
    assert not offenders


def test_no_import_cycles_between_library_modules():
    """Imports form no cycle, those inside functions included (a lazy import closing a circle hides
    it from Python, not from the reader)."""
    mods = modules()
    graph = {m: {n for n in imports(m, p) if n in mods and n != m} for m, p in mods.items()}
    for m in mods:  # a package's __init__ importing its own modules is how packages work, not a cycle
        graph[m] = {n for n in graph[m] if not n.startswith(m + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n] if n in stack else [m, n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_every_floor_is_a_package_that_says_what_it_is():
    for folder in FLOOR_FOLDERS:
        init = PROJECT_ROOT / folder / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), folder


def test_the_docs_name_the_floors_by_their_folders():
    for doc in ("README.md", "DEVELOPERS.md"):
        text = (PROJECT_ROOT / doc).read_text()
        assert all(f"{folder}/" in text for folder in FLOOR_FOLDERS), doc


def test_the_floor_test_sees_an_upward_import(tmp_path):
    """The checker itself: a core module importing a flow is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from flows.pipeline import pipeline\n")
    assert "flows.pipeline" in imports("metagan.bad", bad)
    assert FLOORS.index(floor("flows.pipeline")) > FLOORS.index(floor("metagan.bad"))


# the command itself first: its parser imports every command module, each of which must stay light
SERVING_PATH = ("flows.app.cli", "metagan.serving", "metagan.generate", "metagan.onnx_runtime")
HEAVY = ("torch", "mlflow", "prefect", "dvc", "pandas")


def test_the_serving_path_is_torch_free_by_its_imports():
    """Every module the batch job's modules reach through their module-level imports imports none of
    the heavy packages at module level (a function that needs one imports it inside)."""
    mods, seen, todo, heavy = modules(), set(), list(SERVING_PATH), []
    while todo:
        m = todo.pop()
        if m in seen or m not in mods:
            continue
        seen.add(m)
        for name in imports(m, mods[m], top_level_only=True):
            if name.split(".")[0] in HEAVY:
                heavy.append(f"{m} imports {name}")
            parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)]
            todo += [p for p in parents if p in mods]  # a package's __init__ runs too
    assert {"flows.app.batch_commands", "flows.app.commands", "metagan.serving", "metagan.store", "metagan.model_names"} <= seen
    assert not heavy, "\n".join(sorted(heavy))
