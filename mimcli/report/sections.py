"""Marked sections of markdown documents, written from committed run records by the report's own code.

A section is everything between the lines

    <!-- mim:begin NAME records=PATH[,PATH...] [show=tables,sweeps,protocol,figures] -->
    <!-- mim:end NAME -->

PATHs are run records or folders of them (run_records), relative to the repository root. The body says
which records it comes from and the commands that made the runs and the records, then the report's
markdown accuracy tables (`tables`), sweep tables (`sweeps`), protocol lines (`protocol`) and figures
(`figures`, PNGs written to docs/figures/NAME/). So a number in a document is the number the report
computes from the records next to it, and `check` names every section that has drifted from them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mimcli.errors import UsageError
from mimcli.report.accuracy import plural
from mimcli.report.export import provenance
from mimcli.report.figures import write_plots
from mimcli.report.render import markdown_accuracy, markdown_sweep
from mimcli.report.tables import Report, build_report, protocol_lines
from mimcli.rundir import runs

SECTION = re.compile(
    r"^(?P<begin><!-- mim:begin (?P<name>[\w.-]+)(?P<args>[^>]*?) -->\n)"
    r"(?P<body>.*?)^(?P<end><!-- mim:end (?P=name) -->)",
    re.DOTALL | re.MULTILINE,
)
BEGIN = re.compile(r"^<!-- mim:begin ", re.MULTILINE)  # a marker starts its line; one quoted in prose does not
SHOW = ("tables", "sweeps", "protocol", "figures")
COMMAND = "python experiments/update_docs.py"  # what rewrites the sections; named in every body
FIGURES = Path("docs") / "figures"
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
QUIET = ("--no-progress",)  # options of a recorded command that change nothing in the runs
QUIET_VALUES = ("--out", "-o")  # ... and those that take a value: where the runs went on that machine


@dataclass(frozen=True)
class Section:
    document: Path
    name: str
    records: tuple[str, ...]
    show: tuple[str, ...]
    body: str


def parse(document: Path) -> list[Section]:
    """The marked sections of a document; UsageError naming the section when its markers are malformed."""
    text = document.read_text()
    out: list[Section] = []
    for match in SECTION.finditer(text):
        name = match["name"]
        args = dict(arg.split("=", 1) for arg in match["args"].split() if "=" in arg)
        records = tuple(r for r in args.get("records", "").split(",") if r)
        show = tuple(s for s in args.get("show", "tables").split(",") if s)
        if not records or any(s not in SHOW for s in show):
            raise UsageError(f"{document}: section {name}: give records=PATH[,PATH] and show= from {', '.join(SHOW)}")
        if any(section.name == name for section in out):
            raise UsageError(f"{document}: two sections named {name}")
        out.append(Section(document, name, records, show, match["body"]))
    begun = len(BEGIN.findall(text))
    if begun != len(out):
        raise UsageError(f"{document}: {begun} mim:begin markers but {len(out)} complete sections (check mim:end)")
    return out


def shown_command(argv: list[str]) -> str:
    """A recorded command as a reader would type it: `mim ...`, without the options that change no result."""
    words, skip = ["mim"], False
    for word in argv[1:]:
        if skip:
            skip = False
        elif word in QUIET_VALUES:
            skip = True
        elif word not in QUIET and not word.startswith(tuple(f"{o}=" for o in QUIET_VALUES)):
            words.append(word)
    return shlex.join(words)


def link(target: Path, document: Path) -> str:
    return Path(os.path.relpath(target, document.parent)).as_posix()


def header(section: Section, report: Report, root: Path) -> list[str]:
    """Which records the numbers come from, and the commands that made the runs and the records."""
    sources = ", ".join(f"[`{r}`]({link(root / r, section.document)})" for r in section.records)
    commands = []
    for run in report.runs:
        argv = provenance(run).get("command")
        if isinstance(argv, list) and argv and shown_command(argv) not in commands:
            commands.append(shown_command(argv))
    made = "; ".join(f"`{c}`" for c in commands) or "not recorded"
    exported = "; ".join(f"`mim report RUNS --records {r}`" for r in section.records)
    return [
        f"<!-- written by `{COMMAND}` from the records below; edit the records or the code, not this section -->",
        f"Records: {sources} ({plural(len(report.runs), 'run')}). Runs made by {made}; records written by {exported}.",
        "",
    ]


def render(section: Section, root: Path, figures: bool) -> str:
    """The section's body from its records. Without `figures` a figure section keeps its current figure
    lines (their bytes depend on the matplotlib version; `missing_figures` checks that they exist)."""
    warnings: list[str] = []
    try:
        report = build_report([root / r for r in section.records], "acc_best_test", None, warnings)
    except UsageError as error:
        raise UsageError(f"{section.document}: section {section.name}: {error}") from None
    lines = header(section, report, root)
    if "tables" in section.show:
        for table in report.tables:
            lines += [f"**{table.title}**", "", *markdown_accuracy(report, table), ""]
    if "sweeps" in section.show:
        for sweep in report.sweeps:
            lines += [f"**{sweep.title}**", "", *markdown_sweep(sweep), ""]
    if "protocol" in section.show:
        lines += [*(f"- {what}: {value}" for what, value in protocol_lines(report)), ""]
    if "figures" in section.show:
        lines += figure_lines(section, report, root) if figures else current_figure_lines(section)
    if warnings:
        lines += ["Warnings from the report:", "", *(f"- {w}" for w in warnings), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def figure_lines(section: Section, report: Report, root: Path) -> list[str]:
    folder = root / FIGURES / section.name
    written = write_plots(report, folder) or []
    for _, path in written:
        path.with_suffix(".pdf").unlink(missing_ok=True)  # the PNG is what a document shows
    return [*(f"![{title}]({link(path, section.document)})" for title, path in written), ""]


def current_figure_lines(section: Section) -> list[str]:
    return [line for line in section.body.splitlines() if IMAGE.fullmatch(line.strip())] + [""]


def missing_figures(section: Section) -> list[str]:
    """The figures a section links to that are not on disk."""
    return [target for target in IMAGE.findall(section.body) if not (section.document.parent / target).is_file()]


def rewritten(bodies: dict[str, str], match: re.Match[str]) -> str:
    return match["begin"] + bodies[match["name"]] + match["end"]


def update(documents: Iterable[Path], root: Path, check: bool = False, figures: bool = True) -> list[str]:
    """Rewrite every marked section of `documents` (or with `check`, write nothing); returns one line per
    section that differed from its records ('README.md: main-job'), or whose figures are missing."""
    drifted = []
    for document in documents:
        text = document.read_text()
        bodies: dict[str, str] = {}
        for section in parse(document):
            bodies[section.name] = render(section, root, figures)
            name = f"{Path(os.path.relpath(document, root)).as_posix()}: {section.name}"
            if bodies[section.name] != section.body:
                drifted.append(name)
            if "figures" in section.show and not figures and missing_figures(section):
                drifted.append(f"{name} (missing {', '.join(missing_figures(section))})")
        new_text = SECTION.sub(partial(rewritten, bodies), text)
        if not check and new_text != text:
            runs.atomic_write_text(document, new_text)
    return drifted
