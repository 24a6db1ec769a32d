"""Where a training step's time goes: torch.profiler over a few steps of SimCLR, + RC and + LBE, ResNet-18
at width 64 and 16, batch 512 (the real `Trainer.train_epoch`, data resident on the device).

    python benchmarks/gpu_profile.py --out $OUT --write      # GPU: 8 profiled steps per model, ~1 min
    python benchmarks/gpu_profile.py --dry-run --out /tmp/p  # CPU, tiny sizes: checks that the script works

The training loop names its phases with `record_function` ranges (`mim.data`: gathering the uint8
images and drawing the views; `mim.backbone`, `mim.method` (projector + loss), `mim.regularizer`
inside `mim.forward`; `mim.backward`; `mim.optimizer`; `mim.metrics`: the on-device loss sums).
Every GPU kernel is charged to the phase whose range was open on the host when the kernel was
launched (from any thread, so the backward's kernels land in `mim.backward`). Per step it reports
each phase's GPU time and host time, the GPU's busy time (union of kernels and copies) against the
step's wall time (the rest is the GPU idle, waiting on the host: launches, Python, syncs), kernel
launches, and host synchronisations (cudaStreamSynchronize and friends, with the time the host
spent blocked in them). On the CPU only the host times exist.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, markdown_table, save
from gpu_check import DENSE_BF16_FLOPS, FLOP_PER_VIEW
from train_speed import bench_config, synthetic_images

from mimcli.data.source import MemorySource
from mimcli.train.loop import build_trainer

LEAVES = ("mim.data", "mim.backbone", "mim.method", "mim.regularizer", "mim.backward", "mim.optimizer", "mim.metrics")
LABELS = {
    "mim.data": "augmentation (gather + 2 views)",
    "mim.backbone": "backbone forward",
    "mim.method": "projector + NT-Xent",
    "mim.regularizer": "regulariser term",
    "mim.forward": "forward, rest (autocast, dicts)",
    "mim.backward": "backward (whole model)",
    "mim.optimizer": "optimizer (fused Adam)",
    "mim.metrics": "loss sums",
    "outside": "outside the phases (loop)",
}
GPU_WORK = {"kernel", "gpu_memcpy", "gpu_memset"}
RUNTIME = {"cuda_runtime", "cuda_driver"}
SYNCS = {
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
    "cuStreamSynchronize",
    "cuCtxSynchronize",
    "cuEventSynchronize",
}
METHODS = {"none": "SimCLR", "rc": "SimCLR + RC", "lbe": "SimCLR + LBE"}


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals (kernels on several streams may overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def summarize(events: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Per-step figures (ms, counts) from a Chrome trace's events (torch.profiler's export_chrome_trace).

    Host time of a phase: its ranges' total duration (for `mim.forward`, less the ranges nested in it).
    GPU time of a phase: the kernels and copies launched while its innermost range was open.
    """
    ranges = [
        (e["ts"], e["ts"] + e["dur"], e["name"])
        for e in events
        if e.get("ph") == "X" and e.get("cat") == "user_annotation" and e.get("name", "").startswith("mim.")
    ]
    if not ranges:
        raise ValueError("the trace holds no mim.* ranges: was the training loop profiled?")
    host: dict[str, float] = defaultdict(float)
    for start, end, name in ranges:
        host[name] += end - start
    host["mim.forward"] -= sum(host[name] for name in ("mim.backbone", "mim.method", "mim.regularizer"))
    window = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    by_start = sorted(ranges)

    def phase_at(ts: float) -> str:
        inside = [r for r in by_start if r[0] <= ts <= r[1]]
        return min(inside, key=lambda r: r[1] - r[0])[2] if inside else "outside"

    launches: dict[int, float] = {}
    launch_count, launch_us, sync_count, sync_us = 0, 0.0, 0, 0.0
    for e in events:
        if e.get("ph") != "X" or e.get("cat") not in RUNTIME:
            continue
        correlation = e.get("args", {}).get("correlation")
        if correlation is not None:
            launches[correlation] = e["ts"]
        if not window[0] <= e["ts"] <= window[1]:
            continue
        name = e.get("name", "")
        if "LaunchKernel" in name:
            launch_count += 1
            launch_us += e["dur"]
        if name in SYNCS:
            sync_count += 1
            sync_us += e["dur"]
    gpu: dict[str, float] = defaultdict(float)
    kernels: dict[str, int] = defaultdict(int)
    by_name: dict[str, float] = defaultdict(float)
    busy = []
    for e in events:
        if e.get("ph") != "X" or e.get("cat") not in GPU_WORK:
            continue
        launched = launches.get(e.get("args", {}).get("correlation", -1))
        if launched is None or not window[0] <= launched <= window[1]:
            continue  # work queued before the profiled steps (warm-up) or after them
        phase = phase_at(launched)
        gpu[phase] += e["dur"]
        kernels[phase] += 1
        by_name[e["name"]] += e["dur"]
        busy.append((e["ts"], e["ts"] + e["dur"]))
    wall = window[1] - window[0]
    host["outside"] = wall - sum(host[name] for name in (*LEAVES, "mim.forward"))
    ms = 1e-3 / steps
    busy_us = union_length(busy)
    return {
        "steps": steps,
        "step_ms": wall * ms,
        "gpu_busy_ms": busy_us * ms if busy else None,
        "gpu_idle_ms": (wall - busy_us) * ms if busy else None,
        "launches_per_step": launch_count / steps if busy else None,
        "launch_host_ms": launch_us * ms if busy else None,
        "syncs_per_step": sync_count / steps if busy else None,
        "sync_host_ms": sync_us * ms if busy else None,
        "phases": {
            name: {
                "host_ms": host.get(name, 0.0) * ms,
                "gpu_ms": gpu.get(name, 0.0) * ms if busy else None,
                "kernels": kernels.get(name, 0) / steps,
            }
            for name in LABELS
        },
        "top_kernels_ms": {k: v * ms for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:8]},
    }


def profile_model(kind: str, width: int, batch: int, steps: int, device: str) -> dict[str, Any]:
    """A warm-up epoch, then `steps` steps of one epoch under the profiler; the summary of its trace."""
    config = bench_config(width, kind, batch, "auto", device)
    trainer = build_trainer(config, Path("/nonexistent"), data=synthetic_images(batch * 3))
    trainer.train_epoch(None)  # warm-up: cuDNN autotuning, allocator, the augmentation's constants
    trainer.data = synthetic_images(batch * steps, seed=1)
    trainer.source = MemorySource(trainer.data, trainer.device, trainer.augment, trainer.model.method.n_views)
    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        trainer.train_epoch(None)
        if cuda:
            torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    summary = summarize(events, steps)
    summary.update(method=METHODS[kind], width=width, batch=batch)
    rate = floor_rate()
    if rate and width == 64:
        summary["floor_ms"] = 1e3 * batch * 2 * FLOP_PER_VIEW / rate
    return summary


def floor_rate() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in DENSE_BF16_FLOPS.items() if k in name), None)


def render(rows: list[dict[str, Any]], command: str) -> str:
    """The section for docs/benchmarks.md: one column per model, phases as rows."""
    on_gpu = rows[0]["gpu_busy_ms"] is not None
    heads = [f"{r['method']} w{r['width']}" for r in rows]

    def cell(row: dict[str, Any], phase: str) -> str:
        p = row["phases"][phase]
        return f"{p['gpu_ms']:.2f} / {p['host_ms']:.2f}" if on_gpu else f"{p['host_ms']:.2f}"

    unit = "GPU ms / host ms per step" if on_gpu else "host ms per step"
    table = [{"phase": LABELS[phase], **{h: cell(r, phase) for h, r in zip(heads, rows)}} for phase in LABELS]
    totals: list[tuple[str, str, str]] = [
        ("step wall", "step_ms", "{:.2f}"),
        ("GPU busy", "gpu_busy_ms", "{:.2f}"),
        ("GPU idle (host-bound)", "gpu_idle_ms", "{:.2f}"),
        ("kernel launches", "launches_per_step", "{:.0f}"),
        ("host ms in launches", "launch_host_ms", "{:.2f}"),
        ("host syncs", "syncs_per_step", "{:.1f}"),
        ("host ms blocked in syncs", "sync_host_ms", "{:.2f}"),
        ("arithmetic floor", "floor_ms", "{:.2f}"),
    ]
    for label, key, form in totals:
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            cells = {h: form.format(v) if v is not None else "" for h, v in zip(heads, values)}
            table.append({"phase": label, **cells})
    top = rows[0]["top_kernels_ms"]
    lines = [
        f"## Where a training step's time goes: {machine()}",
        "",
        f"`{command}`: torch.profiler over {rows[0]['steps']} steps after a warm-up epoch, batch "
        f"{rows[0]['batch']}, the default precision (bf16 autocast on a GPU), per step ({unit}). Kernels "
        "are charged to the phase open on the host when they were launched.",
        "",
        markdown_table(table, ["phase", *heads]),
    ]
    if top:
        lines += ["", f"Longest kernels, {heads[0]} (GPU ms per step):", ""]
        lines += [markdown_table([{"kernel": k[:90], "ms": v} for k, v in top.items()], ["kernel", "ms"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, width 8, batch 16, 2 steps")
    parser.add_argument("--widths", default="64,16", help="backbone widths (default 64,16)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8, help="profiled steps per model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_profile.json and gpu_profile.md")
    parser.add_argument("--write", action="store_true", help="also update docs/benchmarks.md (not with --dry-run)")
    args = parser.parse_args()
    if args.dry_run:
        torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other on a shared machine
    widths = [8] if args.dry_run else [int(w) for w in args.widths.split(",")]
    batch, steps = (16, 2) if args.dry_run else (args.batch, args.steps)
    device = "cpu" if args.dry_run else args.device
    rows = []
    for width in widths:
        for kind in METHODS:
            row = profile_model(kind, width, batch, steps, device)
            print(json.dumps({k: row[k] for k in ("method", "width", "step_ms", "gpu_busy_ms", "syncs_per_step")}))
            rows.append(row)
    command = "python benchmarks/gpu_profile.py" + (" --dry-run" if args.dry_run else "")
    if not args.dry_run and (args.widths != "64,16" or args.batch != 512 or args.steps != 8):
        command += f" --widths {args.widths} --batch {args.batch} --steps {args.steps}"
    save("gpu_profile", {"rows": rows}, render(rows, command), args.out, args.write and not args.dry_run)


if __name__ == "__main__":
    main()
