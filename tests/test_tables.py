"""Every table `mim` prints is readable at 60 and 80 columns: no cell cut to '…', no line wider than the
console, and every name that tells two rows apart (data sets, protocols, metrics, presets, points,
models) printed whole on one line, with the values it heads."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from mimcli.config import list_presets
from mimcli.rundir import runs
from mimcli.tables import Col, fit_table
from tests.tiny import TINY

WIDTHS = (60, 80)
PROBES = "shapes:shape,shapes:hue,shapes:position"


def assert_readable(text: str, width: int, whole: list[str]) -> None:
    """No ellipsis, no table line wider than `width`, and each of `whole` on some line, uncut. (Log lines
    such as an epoch's summary are soft-wrapped by the terminal, not by mim.)"""
    lines = text.splitlines()
    assert "…" not in text
    assert max(len(line) for line in lines if line[:1] in "┏┃┡│├└┌") <= width
    missing = [name for name in whole if not any(name in line for line in lines)]
    assert not missing, f"cut or missing at {width} columns: {missing}\n{text}"


@pytest.fixture
def at_width(monkeypatch):
    """Set the width of the consoles `mim` prints to, as COLUMNS=width would."""
    from mimcli import cli

    def set_width(width: int) -> None:
        monkeypatch.setattr(cli.console, "_width", width)
        monkeypatch.setattr(cli.err_console, "_width", width)

    return set_width


def render(renderables, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("width", WIDTHS)
def test_a_wide_table_is_stacked_with_its_key_columns_in_every_part(width):
    columns = [Col("dataset", key=True), Col("protocol", key=True), Col("metric", group="m"), Col("value", group="m")]
    columns += [Col(f"extra column {i}") for i in range(4)]
    names = ["imagefolder:imagenet-val", "shapes:position", "shapes:shape"]
    rows = [[n, "regression", "acc_val_selected", "0.1234", *(f"value-{i}-{n[:6]}" for i in range(4))] for n in names]
    rows[0][-1] = "a-cell-wider-than-the-console-" * 3  # folds: the key columns beside it stay whole
    text = render(fit_table("t", columns, rows, width, notes=["a note " * 30]), width)
    assert_readable(text, width, [*names, "regression", "acc_val_selected", *(r[-2] for r in rows)])
    parts = re.findall(r"t \((\d)/(\d)\)", text)
    assert len(parts) >= 2
    assert all(total == str(len(parts)) for _, total in parts)
    lines = text.splitlines()
    note = lines[max(i for i, line in enumerate(lines) if line.startswith("└")) + 1 :]
    assert " ".join(note).split() == ("a note " * 30).split()  # the note: left-aligned, wrapped at the width
    assert len(note) > 2
    assert all(not line.startswith(" ") and len(line) > width - 10 for line in note[:-1])


@pytest.mark.parametrize("width", WIDTHS)
def test_presets_table(cli, at_width, width):
    at_width(width)
    code, out, _ = cli("presets")
    assert code == 0
    assert_readable(out, width, sorted(list_presets()))


def test_pretrain_and_probe_tables(cli, at_width, tmp_path):
    """The summary and probe tables `mim pretrain` prints, and `mim probe`'s, at both widths; the values
    in probe.json are printed whole beside their names."""
    for width in WIDTHS:
        at_width(width)
        run = tmp_path / f"run{width}"
        code, out, err = cli("pretrain", *TINY, "--set", f"probe.datasets={PROBES.split(',')}", "--out", str(run))
        assert code == 0, err
        records = json.loads((run / runs.PROBE).read_text())["results"]
        values = [f"{r['metrics']['acc_best_test']['mean']:.2f}" for r in records[:2]]
        values.append(f"{records[2]['metrics']['r2']['mean']:.4f}")
        whole = [*PROBES.split(","), "regression", "acc_val_selected", *values]
        assert_readable(out, width, [*whole, "images/s (last epoch)", "final loss_method"])
        code, out, err = cli("probe", str(run), "--datasets", PROBES)
        assert code == 0, err
        assert_readable(out, width, whole)


def test_sweep_and_its_report_tables(cli, at_width, tmp_path):
    """A lambda sweep's outcome table and the report it prints (accuracy, λ sweep and protocol tables)."""
    args = ["sweep", "lambda", "--preset", "quickstart-rc", "--values", "0.1,1", "--out", str(tmp_path), *TINY]
    args += ["--set", "probe.datasets=['shapes:shape','shapes:hue']"]
    for width in WIDTHS:  # the second pass finds every point done and prints the tables again
        at_width(width)
        code, out, err = cli(*args)
        assert code == 0, err
        whole = ["lambda-0.1", "lambda-1", "SimCLR + RC (λ=0.1)", "SimCLR + RC (λ=1)", "shapes:shape", "shapes:hue"]
        assert_readable(out, width, whole)
        assert "Accuracy against λ" in out
        assert "protocol" in out
        code, out, err = cli("sweep", "status", str(tmp_path / "lambda-quickstart-rc"))
        assert code == 0, err
        assert_readable(out, width, ["lambda-0.1", "lambda-1"])
        assert "2 done" in out
