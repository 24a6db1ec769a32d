"""The wheel ships the presets and the reference numbers, and an installed copy finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

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
