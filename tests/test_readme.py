"""The README's Python examples run as written, and the extras it names install what they import."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]

# Each README section with Python examples, and the extras that its text tells a reader to install.
EXAMPLE_EXTRAS = {
    "Quick start": {"torch"},
    "Keras": {"keras"},
    "Pictures in Python": {"torch", "viz"},
}


def _sections() -> dict[str, str]:
    """The README's sections (``##`` and ``###`` headings) by title, each with its text."""
    parts = re.split(r"^#{2,3} (.+)$", README, flags=re.M)
    return {title.strip(): text for title, text in zip(parts[1::2], parts[2::2], strict=True)}


def _imports(code: str) -> set[str]:
    """Top-level names of the modules that ``code`` imports."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _distribution(module: str) -> str:
    """The installed distribution that provides ``module`` (its own name if none is known)."""
    found = importlib.metadata.packages_distributions().get(module, [module])
    return canonicalize_name(found[0])


def _requirements(extras: set[str]) -> dict[str, Requirement]:
    listed = list(PROJECT["dependencies"]) + [r for extra in sorted(extras) for r in EXTRAS[extra]]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in listed}


def _extras_named_in(text: str) -> list[set[str]]:
    """The extras of each ``pip install ".[a,b]"`` in ``text``."""
    return [set(group.split(",")) for group in re.findall(r'pip install "\.\[([a-z,]+)\]"', text)]


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {})


def test_every_python_example_is_in_a_section_with_known_extras():
    sections = _sections()
    with_code = {title for title, text in sections.items() if "```python" in text}
    assert with_code == set(EXAMPLE_EXTRAS)


@pytest.mark.parametrize("section", sorted(EXAMPLE_EXTRAS))
def test_the_extras_install_what_the_example_imports(section):
    extras = EXAMPLE_EXTRAS[section]
    text = _sections()[section]
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    third_party = _imports(code) - set(sys.stdlib_module_names) - {"gradcampp"}
    assert third_party  # every example imports a framework
    provided = _requirements(extras)
    missing = {m for m in third_party if _distribution(m) not in provided}
    assert missing == set(), f"{section}: {sorted(missing)} not installed by extras {extras}"
    # and the README tells the reader to install them: in the section or under "Install"
    named = _extras_named_in(text) + _extras_named_in(_sections()["Install"])
    assert any(extras <= group for group in named), f"no pip install naming {extras}"


def test_a_missing_import_would_be_caught():
    provided = _requirements({"torch"})
    assert _distribution("torchvision") in provided
    assert _distribution("matplotlib") not in provided
    assert _distribution("keras") not in _requirements({"torch"})


def test_the_cpu_only_command_asks_for_the_torch_extras_bounds():
    line = next(line for line in README.splitlines() if "download.pytorch.org/whl/cpu" in line)
    asked = {canonicalize_name(Requirement(w).name): Requirement(w) for w in shlex.split(line)[2:4]}
    extra = {canonicalize_name(Requirement(r).name): Requirement(r) for r in EXTRAS["torch"]}
    assert set(asked) == {"torch", "torchvision"}
    assert {name: str(r.specifier) for name, r in asked.items()} == {
        name: str(r.specifier) for name, r in extra.items()
    }


def _pinned_by_ci() -> dict[str, str]:
    """Versions CI installs: the test extra's exact pins and ``scripts/test.sh``'s ``==x.y.*``."""
    pins = {}
    for r in map(Requirement, EXTRAS["test"]):
        exact = [s.version for s in r.specifier if s.operator == "=="]
        if exact:
            pins[canonicalize_name(r.name)] = exact[0]
    script = (ROOT / "scripts" / "test.sh").read_text()
    for name, version in re.findall(r'"([a-z-]+)==(\d+\.\d+)\.\*"', script):
        pins[canonicalize_name(name)] = version + ".0"
    return pins


@pytest.mark.parametrize(
    ("extra", "name"),
    [("torch", "torch"), ("torch", "torchvision"), ("demo", "torch"), ("keras", "tensorflow")],
)
def test_the_extras_bounds_admit_what_ci_tests_and_nothing_newer(extra, name):
    tested = Version(_pinned_by_ci()[name])
    requirement = next(
        Requirement(r) for r in EXTRAS[extra] if canonicalize_name(Requirement(r).name) == name
    )
    assert requirement.specifier.contains(tested)
    upper = [s for s in requirement.specifier if s.operator == "<"]
    assert len(upper) == 1, f"{extra}: {name} has no upper bound"
    bound = Version(upper[0].version)
    # the bound is the next minor release after the tested one
    assert (bound.major, bound.minor) == (tested.major, tested.minor + 1)
    assert f"`{name}<{upper[0].version}`" in _sections()["Install"] or name == "torchvision"
