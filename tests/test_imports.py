"""Imports flow one way: every `mimcli` import (top level or inside a function) goes to the same or an
earlier layer, the package holds no import cycle, and `mim report` never loads the training loop.

The layer order is read from the picture in docs/architecture.md, so the picture stays true.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mimcli

PACKAGE = Path(mimcli.__file__).parent

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def read_layers(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(layer, module prefixes), bottom layer first, from the picture in docs/architecture.md (its first
    ```text block): one row per layer, `number name module module ...`, names relative to `mimcli`."""
    block = text.split("```text\n", 1)[1].split("```", 1)[0]
    rows = sorted(
        (int(number), name, tuple("mimcli" if m == "mimcli" else f"mimcli.{m}" for m in modules))
        for number, name, *modules in (line.split() for line in block.splitlines() if line.strip())
    )
    assert [row[0] for row in rows] == list(range(len(rows))), "layers are numbered 0, 1, 2, ... in the picture"
    return [(name, prefixes) for _, name, prefixes in rows]


# A module may import from its own layer or an earlier one. Prefixes match whole dotted components
# ("mimcli.data" covers mimcli.data.shapes, not mimcli.database); the longest wins.
LAYERS = read_layers(ARCHITECTURE.read_text())

# Imports the layer order allows but the design does not: the report reads run directories and must
# not pull in training, and nothing before the sweep starts runs.
FORBIDDEN: list[tuple[str, str]] = [
    ("mimcli.report", "mimcli.train"),
    ("mimcli.report", "mimcli.methods"),
    ("mimcli.report", "mimcli.regularizers"),
    ("mimcli.report", "mimcli.sweep"),
]

# Known violations, each to be removed (test_no_stale_allowances says when one is gone). None today: keep it so.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: str | None = None) -> set[str]:
    """Every mimcli module `path` imports, anywhere in the file (lazy imports and TYPE_CHECKING included).
    `package` is the package relative imports start from (default: the one `path` sits in)."""
    tree = ast.parse(path.read_text(), str(path))
    if package is None:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            found.add(base)
            # `from mimcli import signals` imports the module mimcli.signals, not just the package
            found.update(f"{base}.{alias.name}" for alias in node.names if module_exists(f"{base}.{alias.name}"))
    return {name for name in found if name == "mimcli" or name.startswith("mimcli.")}


def module_exists(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(name: str) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best >= 0, f"{name} is in no layer: add it to the picture in docs/architecture.md"
    return best


def covers(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def edges() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_name_in_the_picture_is_a_module():
    stale = [
        prefix for _, prefixes in LAYERS for prefix in prefixes if prefix != "mimcli" and not module_exists(prefix)
    ]
    assert not stale, f"docs/architecture.md names modules that do not exist: {stale}"


def test_the_picture_is_read_bottom_first():
    picture = "text\n```text\n 1 upper   a  b.c\n 0 lower   mimcli\n```\n```text\n0 other x\n```\n"
    assert read_layers(picture) == [("lower", ("mimcli",)), ("upper", ("mimcli.a", "mimcli.b.c"))]


def test_every_module_has_a_layer():
    for module in edges():
        layer(module)


def test_imports_flow_one_way():
    wrong = []
    for module, targets in edges().items():
        for target in sorted(targets):
            if target == "mimcli" and module != "mimcli":
                continue  # the package itself only holds __version__
            if (
                layer(target) > layer(module)
                and (module, target) not in ALLOWED
                and not any((module, prefix) in ALLOWED for prefix in _prefixes(target))
            ):
                wrong.append(f"{module} ({LAYERS[layer(module)][0]}) imports {target} ({LAYERS[layer(target)][0]})")
            for source, forbidden in FORBIDDEN:
                if covers(source, module) and covers(forbidden, target):
                    wrong.append(f"{module} imports {target}: {source} must not import {forbidden}")
    assert not wrong, "\n".join(wrong)


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_no_import_cycles():
    graph = edges()
    graph = {
        module: {t for t in targets if t in graph and t != module and t != "mimcli"}
        for module, targets in graph.items()
    }
    # a package's __init__ re-exporting its own submodules is not a cycle with them
    graph = {module: {t for t in targets if not covers(module, t)} for module, targets in graph.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_stale_allowances():
    graph = edges()
    stale = [
        f"{a} -> {b}" for a, b in sorted(ALLOWED) if a in graph and not any(covers(b, target) for target in graph[a])
    ]
    assert not stale, "these imports are gone: delete them from ALLOWED\n" + "\n".join(stale)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "import torch\n\ndef f():\n    from mimcli.train import pretrain\n    import mimcli.sweep\n"
        "    from . import signals\n    from .data.shapes import generate_shapes\n"
    )
    assert imports(source, package="mimcli") == {
        "mimcli.train",
        "mimcli.sweep",
        "mimcli",
        "mimcli.signals",
        "mimcli.data.shapes",
    }


def test_report_does_not_load_training():
    code = (
        "import sys, mimcli.report, mimcli.report.collect; "
        "print(sorted(m for m in sys.modules if m.startswith('mimcli')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for module in ("mimcli.train", "mimcli.methods", "mimcli.regularizers", "mimcli.sweep"):
        assert f"'{module}'" not in loaded, loaded
        assert f"'{module}." not in loaded, loaded
