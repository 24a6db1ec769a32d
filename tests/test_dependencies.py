"""Every third-party module that mimcli imports comes from a distribution that pyproject.toml declares.

A module that arrives only as another package's dependency (click through an older typer, PIL through
torchvision) breaks the day that package stops depending on it; this test fails first.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mimcli"


def _normalise(name: str) -> str:
    """PEP 503 name normalisation: `Tomli_W` and `tomli-w` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def imported_modules() -> dict[str, list[str]]:
    """{top-level third-party module: the mimcli files that import it} (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"mimcli", "__future__"}:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return {module: sorted(files) for module, files in found.items()}


@functools.cache
def declared_distributions() -> set[str]:
    """The distributions pyproject.toml names: dependencies and every optional extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normalise(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]) for requirement in requirements}


@functools.cache
def _installed_providers() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def providers(module: str) -> set[str]:
    """The installed distributions that ship `module`; an optional module that is not installed here is
    looked up by its own name (tensorboard's module is tensorboard)."""
    names = _installed_providers().get(module)
    return {_normalise(name) for name in names} if names else {_normalise(module)}


def test_the_scan_sees_the_imports_the_code_has():
    modules = imported_modules()
    assert "torch" in modules
    assert "typer" in modules
    assert "mimcli/cli.py" in modules["typer"]


@pytest.mark.parametrize("module", sorted(imported_modules()))
def test_every_imported_module_is_declared(module):
    declared = declared_distributions()
    files = imported_modules()[module]
    assert providers(module) & declared, (
        f"mimcli imports {module!r} ({', '.join(files)}), but pyproject.toml declares none of "
        f"{sorted(providers(module))}: add it to [project] dependencies or an extra"
    )
