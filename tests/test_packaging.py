"""The wheel ships the presets and the reference numbers, and an installed copy finds them; the
distribution's name and commands cannot be confused with other projects'."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_installed_wheel_finds_presets_and_reference_numbers(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path / "wheel")],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
        assert "Name: mim-ssl\n" in archive.read(metadata).decode()
    assert "mim = mimcli.cli:main" in entry_points
    assert "mimcli = mimcli.cli:main" in entry_points
    code = (
        "import mimcli.config as c, mimcli.report.reference as r; p = c.list_presets(); "
        "print(len(p), p['quickstart'].parent, len(r.load_reference('paper')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    ).stdout.split()
    shipped = len(list((ROOT / "presets").glob("*.toml")))
    assert int(out[0]) == shipped
    assert out[1] == str(tmp_path / "site" / "mimcli" / "presets")
    assert int(out[2]) > 0


def test_the_distribution_is_mim_ssl_with_two_commands():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "mim-ssl"  # "mim" on the package index is an unrelated proxy server
    assert project["scripts"] == {"mim": "mimcli.cli:main", "mimcli": "mimcli.cli:main"}


def install_lines() -> list[tuple[str, str]]:
    """(file, line) for every `pip install` in the README and docs/."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            found += [(path.name, part) for part in re.findall(r"pip install [^`&;|]*", line)]
    return found


def installs_bare_mim(line: str) -> bool:
    """Whether a `pip install ...` line names the distribution `mim` (with or without extras or version)."""
    words = shlex.split(line.replace("'", " ").replace('"', " "))[2:]
    return any(re.fullmatch(r"mim(\[[^\]]*\])?([<>=!~].*)?", word) for word in words if not word.startswith("-"))


@pytest.mark.parametrize(
    ("line", "bare"),
    [
        ("pip install 'mim[tensorboard]'", True),
        ("pip install mim", True),
        ("pip install mim==0.1.0", True),
        ("pip install -e '.[tensorboard]'", False),
        ("pip install mim-ssl", False),
        ("pip install torch==2.14.1 torchvision==0.29.1", False),
    ],
)
def test_the_bare_name_check_tells_mim_from_other_names(line, bare):
    assert installs_bare_mim(line) is bare


def test_no_readme_or_docs_line_installs_a_bare_mim():
    lines = install_lines()
    assert len(lines) > 3
    assert [entry for entry in lines if installs_bare_mim(entry[1])] == []
