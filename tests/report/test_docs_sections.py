"""Documents that regenerate: every marked section of README.md and docs/*.md is what
experiments/update_docs.py writes from the committed run records, and the check names a section that
drifts from its records."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from mimcli.config import load_config
from mimcli.errors import UsageError
from mimcli.report.run_records import SUFFIX, make_record
from mimcli.report.sections import parse, update
from mimcli.rundir import runs
from tests.tiny import TINY_BASE

ROOT = Path(__file__).resolve().parents[2]


def update_docs():
    spec = importlib.util.spec_from_file_location("update_docs", ROOT / "experiments" / "update_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_marked_section_is_written_from_its_committed_records(capsys):
    """The suite's check: tables only (a figure's bytes vary with the matplotlib version; its file must exist)."""
    code = update_docs().main(["--check", "--tables-only"])
    assert (code, capsys.readouterr().err) == (0, "")


def record(seed: int, shape: float) -> dict:
    config = load_config(None, [*TINY_BASE, f"train.seed={seed}"]).to_dict()
    result = {
        "dataset": "shapes:shape",
        "task": "classification",
        "protocol": "linear",
        "layers": [4],
        "status": "ok",
        "metrics": {"acc_best_test": {"mean": shape, "std": 0.0, "values": [shape]}},
        "params": {"epochs": 100},
    }
    command = ["/somewhere/bin/mim", "sweep", "seeds", "--values", "0,1", "--out", "/tmp/x", "--no-progress"]
    return make_record(config, {"status": "finished", "command": command}, [result], [])


@pytest.fixture
def repo(tmp_path) -> Path:
    """A document with one section over two records (seeds 0 and 1: shape 60 and 64)."""
    for seed, shape in ((0, 60.0), (1, 64.0)):
        runs.write_json(tmp_path / "docs" / "records" / "study" / f"s{seed}{SUFFIX}", record(seed, shape))
    (tmp_path / "docs" / "results.md").write_text(
        "# Results\n\n<!-- mim:begin study records=docs/records/study -->\nold\n<!-- mim:end study -->\n\nafter\n"
    )
    return tmp_path


def test_update_writes_the_table_from_the_records_and_check_then_passes(repo):
    document = repo / "docs" / "results.md"
    assert update([document], repo) == ["docs/results.md: study"]
    text = document.read_text()
    assert "| SimCLR | 2 | 62.00 ± 2.83 |" in text  # mean and sample std of 60 and 64
    assert "`mim sweep seeds --values 0,1`" in text  # the command that made the runs, as one types it
    assert "[`docs/records/study`](records/study)" in text
    assert text.startswith("# Results\n\n<!-- mim:begin study")
    assert text.endswith("<!-- mim:end study -->\n\nafter\n")
    assert update([document], repo, check=True) == []
    assert document.read_text() == text


def test_check_names_a_drifted_section_and_writes_nothing(repo):
    document = repo / "docs" / "results.md"
    update([document], repo)
    drifted = document.read_text().replace("62.00", "63.00")
    document.write_text(drifted)
    assert update([document], repo, check=True) == ["docs/results.md: study"]
    assert document.read_text() == drifted


def test_a_figure_section_without_its_png_fails_the_tables_only_check(repo):
    document = repo / "docs" / "results.md"
    document.write_text("<!-- mim:begin figs records=docs/records/study show=figures -->\n<!-- mim:end figs -->\n")
    update([document], repo, figures=False)  # the header, and no figure lines yet
    text = document.read_text().replace("<!-- mim:end", "\n![accuracy](figures/figs/accuracy-shapes.png)\n<!-- mim:end")
    document.write_text(text)
    assert update([document], repo, check=True, figures=False) == [
        "docs/results.md: figs (missing figures/figs/accuracy-shapes.png)"
    ]
    (repo / "docs" / "figures" / "figs").mkdir(parents=True)
    (repo / "docs" / "figures" / "figs" / "accuracy-shapes.png").write_bytes(b"png")
    assert update([document], repo, check=True, figures=False) == []


@pytest.mark.parametrize(
    "text",
    [
        "<!-- mim:begin a records=docs/records/study -->\n",  # no end marker
        "<!-- mim:begin a -->\n<!-- mim:end a -->\n",  # no records
        "<!-- mim:begin a records=x show=pictures -->\n<!-- mim:end a -->\n",  # unknown show
        "<!-- mim:begin a records=x -->\n<!-- mim:end a -->\n<!-- mim:begin a records=x -->\n<!-- mim:end a -->\n",
    ],
)
def test_malformed_markers_are_an_error_naming_the_document(tmp_path, text):
    document = tmp_path / "doc.md"
    document.write_text(text)
    with pytest.raises(UsageError, match=r"doc\.md"):
        parse(document)


def test_a_figure_section_writes_its_pngs_and_links_them(repo):
    document = repo / "docs" / "results.md"
    document.write_text("<!-- mim:begin figs records=docs/records/study show=figures -->\n<!-- mim:end figs -->\n")
    assert update([document], repo) == ["docs/results.md: figs"]
    folder = repo / "docs" / "figures" / "figs"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", document.read_text())
    assert links
    assert sorted(links) == sorted(f"figures/figs/{p.name}" for p in folder.iterdir())
    assert all(link.endswith(".png") for link in links)  # the PDF beside each PNG is not kept
    assert update([document], repo, check=True, figures=False) == []


def test_a_section_naming_missing_records_is_an_error_naming_it(repo):
    document = repo / "docs" / "results.md"
    document.write_text("<!-- mim:begin gone records=docs/records/gone -->\n<!-- mim:end gone -->\n")
    with pytest.raises(UsageError, match=r"results\.md: section gone: .*docs/records/gone"):
        update([document], repo, check=True)
