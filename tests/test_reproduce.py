"""experiments/reproduce_report.py --dry-run: the GPU script's whole path (extract, 3 trainings, probes, table) on a
CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "reproduce_report.py"


@pytest.mark.slow
def test_reproduce_report_dry_run(tmp_path, cifar10_jpeg):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--dry-run",
            "--archive",
            str(cifar10_jpeg),
            "--out",
            str(tmp_path),
            "--runs",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "reproduce_report.json").read_text())
    assert result["dry_run"] is True
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["SimCLR", "SimCLR + RC", "SimCLR + LBE"]
    assert [rows[m]["cifar10 (report)"] for m in rows] == [76.91, 77.31, 76.74]
    for row in rows.values():
        assert 0 <= row["cifar10 (ours)"] <= 100  # 200 test images of 10 classes
        assert row["difference"] == row["cifar10 (ours)"] - row["cifar10 (report)"]
        assert row["colour R²"] <= 1
    # each run trained on the 20-per-class subset, one epoch, and probed both CIFAR-derived sets
    for preset in ("simclr", "simclr-rc", "simclr-lbe"):
        probe = json.loads((tmp_path / "runs" / preset / "probe.json").read_text())["results"]
        names = [r["dataset"].split(":")[0] for r in probe]
        assert names == ["imagefolder", "colourstats"]
        assert {r["n_train"] for r in probe} == {200}
        assert {r["n_test"] for r in probe} == {200}
    assert "76.91" in (tmp_path / "reproduce_report.md").read_text()
