"""Shared by the benchmark scripts: machine description, markdown tables, and one section per script
in docs/benchmarks.md (replaced in place, so every number there comes from the script that owns it)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEvery number below is written by a script in `benchmarks/`; rerun it to refresh its section.\n"
    "Speeds are measured side by side in one run (the machines are shared and noisy): compare ratios, "
    "not absolute figures across sections.\n"
)


def machine() -> str:
    """CPU model, cores and torch build; the GPU when there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def update_section(name: str, body: str, doc: Path = DOC) -> Path:
    """Replace (or append) the section between `<!-- name -->` markers in docs/benchmarks.md (or `doc`)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else HEADER
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return doc


def save(name: str, record: dict[str, Any], text: str, out: Path | None, write: bool) -> None:
    """A script's results: OUT/<name>.json and OUT/<name>.md when `out` is given, and its section of
    docs/benchmarks.md when `write`; the text is printed either way."""
    import json

    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps({"machine": machine(), **record}, indent=2))
        (out / f"{name}.md").write_text(text + "\n")
    if write:
        update_section(name, text)
    print(text)


def in_fresh_process(module: str, function: str, arg: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`benchmarks/<module>.py`'s function(arg) in a new Python process (one intra-op thread, plus `env`),
    its JSON result: peak RSS (`resource.getrusage`) is per process, so each measurement gets its own."""
    import json
    import subprocess
    import sys

    root = DOC.parents[1]
    code = (
        f"import json, sys; sys.path.insert(0, {str(root / 'benchmarks')!r}); import {module} as m; "
        f"print(json.dumps(m.{function}({arg!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", **(env or {})},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
