"""Every command's --help shows its texts as written: no bracketed text eaten by markup (`[plots]`)."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from mimcli.cli import app


def words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_every_help_text_renders_in_full():
    command = typer.main.get_command(app)
    runner = CliRunner()
    names = [[], *[[name] for name in command.commands]]  # type: ignore[attr-defined]
    assert len(names) > 6
    checked = 0
    for args in names:
        result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (args, result.output)
        shown = words(result.output)
        target = command.commands[args[0]] if args else command  # type: ignore[attr-defined]
        texts = [target.help or ""] + [p.help for p in target.params if getattr(p, "help", None)]
        for text in texts:
            first = words(text).split("\n")[0]
            assert first in shown, (args, first)
            checked += 1
    report = words(runner.invoke(app, ["report", "--help"], env={"COLUMNS": "80"}).output)
    assert "[plots] extra" in report
    assert checked > 30


def test_citation_file_names_the_paper_and_the_readme_shows_how_to_cite():
    from pathlib import Path

    yaml = __import__("pytest").importorskip("yaml")
    root = Path(__file__).resolve().parents[1]
    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Rethinking Minimal Sufficient Representation in Contrastive Learning"
    assert [a["family-names"] for a in paper["authors"]] == ["Wang", "Guo", "Deng", "Lu"]
    assert paper["year"] == 2022
    import mimcli

    assert cff["version"] == mimcli.__version__
    readme = (root / "README.md").read_text()
    assert "## How to cite" in readme
    assert "@inproceedings{wang2022rethinking" in readme
