"""The one-lease GPU scripts: the profile's accounting (on a made-up CUDA trace, since CI has no GPU) and
`benchmarks/gpu_lease.sh dry`, the whole lease at tiny sizes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from gpu_profile import summarize, union_length  # noqa: E402


def span(cat: str, name: str, ts: float, dur: float, **args: int) -> dict[str, object]:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": 1, "args": args}


def test_union_length_counts_overlaps_once():
    assert union_length([(0, 10), (5, 15), (20, 25), (21, 22)]) == 20


def test_kernels_are_charged_to_the_phase_open_at_their_launch():
    """Two steps of 100 us; kernel times and launch points chosen so every figure is known exactly."""
    events = []
    for step in range(2):
        t = step * 100.0
        events += [
            span("user_annotation", "mim.data", t, 20),
            span("user_annotation", "mim.forward", t + 20, 30),
            span("user_annotation", "mim.backbone", t + 22, 20),
            span("user_annotation", "mim.method", t + 42, 6),
            span("user_annotation", "mim.backward", t + 50, 30),
            span("user_annotation", "mim.optimizer", t + 80, 10),
            span("user_annotation", "mim.metrics", t + 90, 5),
            # launches: one in data, two in the backbone (inside forward), one from the autograd thread
            span("cuda_runtime", "cudaLaunchKernel", t + 5, 1, correlation=10 * step + 1),
            span("cuda_runtime", "cudaLaunchKernel", t + 25, 1, correlation=10 * step + 2),
            span("cuda_runtime", "cudaLaunchKernel", t + 30, 1, correlation=10 * step + 3),
            {**span("cuda_runtime", "cudaLaunchKernel", t + 60, 1, correlation=10 * step + 4), "tid": 2},
            span("cuda_runtime", "cudaStreamSynchronize", t + 10, 8),  # a host sync inside the data phase
            span("kernel", "augment", t + 6, 4, correlation=10 * step + 1),
            span("kernel", "conv", t + 30, 10, correlation=10 * step + 2),
            span("kernel", "conv", t + 35, 10, correlation=10 * step + 3),  # overlaps the first conv by 5
            span("kernel", "conv_backward", t + 61, 18, correlation=10 * step + 4),
        ]
    events.append(span("kernel", "warm-up leftover", -50, 40, correlation=99))  # launched before the window
    events.append(span("cuda_runtime", "cudaLaunchKernel", -60, 1, correlation=99))
    summary = summarize(events, steps=2)
    phases = summary["phases"]
    assert summary["step_ms"] == pytest.approx(0.0975)  # the window 0..195 us over 2 steps
    assert phases["mim.data"]["gpu_ms"] == pytest.approx(0.004)
    assert phases["mim.backbone"]["gpu_ms"] == pytest.approx(0.020)
    assert phases["mim.backbone"]["kernels"] == 2
    assert phases["mim.backward"]["gpu_ms"] == pytest.approx(0.018)
    assert phases["mim.forward"]["gpu_ms"] == 0  # the innermost range takes the kernel
    assert phases["mim.forward"]["host_ms"] == pytest.approx(0.004)  # 30 us less the 26 us nested in it
    assert phases["outside"]["host_ms"] == pytest.approx(0.0025)  # the 5 us between the two steps
    assert summary["gpu_busy_ms"] == pytest.approx((4 + 15 + 18) / 1000)  # the two convs overlap by 5
    assert summary["gpu_idle_ms"] == pytest.approx(summary["step_ms"] - summary["gpu_busy_ms"])
    assert summary["launches_per_step"] == 4  # the warm-up launch is outside the window
    assert summary["syncs_per_step"] == 1
    assert summary["sync_host_ms"] == pytest.approx(0.008)
    assert list(summary["top_kernels_ms"]) == ["conv", "conv_backward", "augment"]


def test_a_trace_without_the_loop_ranges_is_refused():
    with pytest.raises(ValueError, match="no mim"):
        summarize([span("cpu_op", "aten::mm", 0, 1)], steps=1)


@pytest.mark.slow
def test_lease_dry_run(tmp_path, cifar10_jpeg):
    """Every step of the lease at tiny sizes on the CPU, each writing its records to the output folder."""
    env = {**os.environ, "PYTHON": sys.executable, "LEASE_SECONDS": "900"}
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_lease.sh"), "dry", str(tmp_path), str(cifar10_jpeg)],
        cwd=BENCHMARKS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = (tmp_path / "lease.log").read_text()
    assert done.returncode == 0, log[-3000:]
    assert "== skipped," not in log, log[-3000:]
    assert log.count("== exit 0 ") == 4, log[-3000:]
    profile = json.loads((tmp_path / "gpu_profile.json").read_text())["rows"]
    assert [r["method"] for r in profile] == ["SimCLR", "SimCLR + RC", "SimCLR + LBE"]
    for row in profile:
        phases = row["phases"]
        assert row["gpu_busy_ms"] is None  # no GPU: host times only
        assert sum(p["host_ms"] for p in phases.values()) == pytest.approx(row["step_ms"])
        assert row["syncs_per_step"] is None
        assert row["launches_per_step"] is None
        for name in ("mim.data", "mim.backbone", "mim.method", "mim.backward", "mim.optimizer"):
            assert phases[name]["host_ms"] > 0, name
    times = json.loads((tmp_path / "epoch_times.json").read_text())
    assert [[r["method"] for r in times[k]] for k in ("before", "now")] == [["SimCLR", "SimCLR + RC"]] * 2
    assert "| SimCLR + RC | 8 | 16 |" in (tmp_path / "epoch_times.md").read_text()
    if (tmp_path / "lightly_compare.json").exists():
        row = json.loads((tmp_path / "lightly_compare.json").read_text())["row"]
        assert row["mim / lightly"] > 0
    else:
        assert "lightly_compare: skipped, lightly is not installed" in log
    report = json.loads((tmp_path / "reproduce_report.json").read_text())
    assert report["complete"]
    assert [r["model"] for r in report["rows"]] == ["SimCLR"]
    assert (tmp_path / "runs" / "simclr" / "metrics.jsonl").read_text().count("\n") == 1
