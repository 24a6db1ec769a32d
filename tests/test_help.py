"""Every command's --help shows its texts as written: no bracketed text eaten by markup (`mim[plots]`)."""

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
    assert "mim[plots]" in report
    assert checked > 30
