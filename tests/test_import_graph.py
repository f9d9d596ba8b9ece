"""The run's layers import one way: stages below engines, engines below the entry points.

Read from the sources (``ast``), not by importing them, so that an import inside a function
counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gradcampp

PACKAGE = Path(gradcampp.__file__).resolve().parent
# the entry points above the engines: they may import the package ``gradcampp.engines`` (its
# ``run_job``), never a module inside it
ENTRY_POINTS = {"cli", "ray"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The ``gradcampp`` modules that ``path`` imports (``from X import name`` counts as ``X``
    and, when ``X.name`` is a module of the package, as that too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], node.module or ""])
            else:
                base = node.module or ""
            base = base.rstrip(".")
            found.add(base)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").is_file():
                    found.add(candidate)
    return {name for name in found if name == "gradcampp" or name.startswith("gradcampp.")}


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_graph_is_read():
    cli = imports(PACKAGE / "cli.py")
    assert "gradcampp.engines" in cli
    local = imports(PACKAGE / "engines" / "local.py")
    assert {"gradcampp.stages.read", "gradcampp.stages.explain", "gradcampp.stages.write"} <= local


def test_no_module_outside_the_engines_imports_one():
    offences = []
    for path in sources():
        name = module_name(path)
        if name == "gradcampp.engines" or name.startswith("gradcampp.engines."):
            continue
        engine_imports = {
            imported
            for imported in imports(path)
            if imported == "gradcampp.engines" or imported.startswith("gradcampp.engines.")
        }
        allowed = {"gradcampp.engines"} if name.split(".")[-1] in ENTRY_POINTS else set()
        if name.count(".") != 1:
            allowed = set()  # entry points are top-level modules of the package
        if engine_imports - allowed:
            offences.append(f"{name} imports {sorted(engine_imports - allowed)}")
    assert offences == []


def test_the_stages_import_no_engine_and_no_entry_point():
    for path in sorted((PACKAGE / "stages").glob("*.py")):
        above = {
            imported
            for imported in imports(path)
            if imported.startswith("gradcampp.engines")
            or imported in {f"gradcampp.{entry}" for entry in ENTRY_POINTS}
        }
        assert above == set(), module_name(path)


def in_a_cycle(graph: dict[str, set[str]]) -> list[str]:
    """The modules of ``graph`` (module -> modules it imports) that are in or behind a cycle:
    what is left after peeling off, again and again, the modules whose imports are all gone."""
    left = {name: set(needs) & set(graph) - {name} for name, needs in graph.items()}
    while True:
        ready = [name for name, needs in left.items() if not needs & set(left)]
        if not ready:
            return sorted(left)
        for name in ready:
            del left[name]


def test_cycles_are_found():
    assert in_a_cycle({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == ["a", "b", "c"]
    assert in_a_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_module_level_imports_have_no_cycle():
    assert in_a_cycle({module_name(p): imports(p, top_level_only=True) for p in sources()}) == []


RUN_MODULES = ("gradcampp.stages", "gradcampp.engines")
RUN_SUPPORT = {
    "gradcampp.parquet",
    "gradcampp.run_file",
    "gradcampp.recipe",
    "gradcampp.outputs",
    "gradcampp.out_folder",
    "gradcampp._ray",
    "gradcampp.ray",
    "gradcampp.cli",
}


def test_the_run_modules_import_each_other_one_way():
    """Among the modules of a run, no cycle even through imports inside functions (the
    back-and-forth of a driver calling a step that calls back into the driver)."""
    names = {module_name(path): path for path in sources()}
    run = {
        name
        for name in names
        if name in RUN_SUPPORT or name.startswith(tuple(m + "." for m in RUN_MODULES))
    }
    run |= set(RUN_MODULES)
    assert in_a_cycle({name: imports(names[name]) for name in run}) == []
