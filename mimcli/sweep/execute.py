"""`mim sweep`: a grid of runs, each a normal run directory, trained and probed; re-running completes it.

    runs/<sweep>/<point>/       a run directory like any other (config.toml, metrics.jsonl, backbone.pt,
                                run.json, probe.json), so `mim report runs/<sweep>` reads it
    runs/<sweep>/<point>.lock   present while a process works on the point: pid, host, process start time

Kinds: `lambda` (regularizer.lambda; points per preset), `epochs` (train.epochs: ONE training to the
largest value keeping backbones at the others; every other point is assembled from those weights),
`seeds` (train.seed), `regularizers` (regularizer.kind, each with the lambda of its own preset) and
`grid` (the product of `section.key=v1,v2,...` axes). `--random-init` adds, per preset, an untrained
point per training seed (`random-init-seed-S`, train.epochs = 0): the baseline `mim report` subtracts.

A point is finished when its run.json says "finished" and probe.json holds every data set of its
[probe] section for the current backbone.pt; a finished point is skipped, an interrupted one (a
checkpoint, not finished) is resumed, a trained but unprobed one is probed. A point locked by a
live process is skipped; a lock left by a dead process on this host is taken over. See docs/sweeps.md.

This module runs points in order; plan.py makes them, state.py says where each stands, output.py prints.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from mimcli import signals
from mimcli.config import READ, training_plugins
from mimcli.errors import UsageError
from mimcli.probe import run_probes
from mimcli.rundir import runs
from mimcli.rundir.lock import describe_holder, lock_note, point_lock
from mimcli.sweep.ddp import train_ddp
from mimcli.sweep.output import outcome_table, print_report
from mimcli.sweep.plan import SweepPoint, plan_sweep, shard_points, unique
from mimcli.sweep.state import (
    PointOutcome,
    check_conflicts,
    missing_probes,
    point_state,
    run_status,
)
from mimcli.train.loop import pretrain

# --------------------------------------------------------------------------------------------- running


def train_command(point: SweepPoint, resume: bool = False) -> str:
    verb = "supervised" if point.config.method.name == "supervised" else "pretrain"
    args = ["mim", verb, "--preset", point.preset]
    for text in point.overrides:
        args += ["--set", text]
    args += ["--out", str(point.run_dir)]
    return shlex.join(args + (["--resume"] if resume else []))


def probe_command(point: SweepPoint, datasets: list[str]) -> str:
    return shlex.join(["mim", "probe", str(point.run_dir), "--datasets", ",".join(datasets)])


def plan_commands(point: SweepPoint) -> tuple[str, list[str]]:
    """(state, the commands that would bring the point to finished now); `mim pretrain` probes when it ends."""
    state = point_state(point)
    if state == "finished":
        return state, []
    if state == "trained":
        return state, [probe_command(point, missing_probes(point.run_dir, point.config))]
    if point.source is not None:
        source = point.source.run_dir / "backbones" / f"epoch-{point.epoch}.pt"
        commands = [f"# the sweep copies {source} into {point.run_dir} (needs {point.source.name} trained)"]
        if point.config.probe.datasets:
            commands.append(probe_command(point, point.config.probe.datasets))
        return state, commands
    return state, [train_command(point, resume=state == "interrupted")]


def _clear_unstarted(run_dir: Path) -> None:
    """A run that died before its first checkpoint leaves config.toml/run.json: start it afresh."""
    if not run_dir.exists():
        return
    leftovers = {runs.CONFIG, runs.STATUS, runs.METRICS}
    unknown = [p.name for p in run_dir.iterdir() if p.name not in leftovers and not p.name.endswith(".tmp")]
    if unknown:
        raise UsageError(
            f"{run_dir} holds files that are not an unstarted run ({', '.join(sorted(unknown)[:3])}): "
            "remove them or choose another sweep --name"
        )
    shutil.rmtree(run_dir)


def _train(point: SweepPoint, console: Console, show_progress: bool, gpus: int = 1) -> bool:
    """Train (or resume) the point's run (on `gpus` torchrun workers when more than one); True when it resumed."""
    resume = (point.run_dir / runs.CHECKPOINT).is_file()
    if not resume:
        _clear_unstarted(point.run_dir)
    console.print(f"{point.name}: {'resuming' if resume else 'training'} in {point.run_dir}", markup=False)
    if gpus > 1:
        train_ddp(point, resume, gpus, console)
    else:
        pretrain(point.config, point.run_dir, resume=resume, console=console, show_progress=show_progress)
    return resume


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _assemble(point: SweepPoint, outcome: PointOutcome, console: Console, show_progress: bool, gpus: int = 1) -> bool:
    """An epochs-sweep point from its source run's backbones/epoch-N.pt (training the source first if
    needed); False when the source is locked by another live process."""
    source = point.source
    assert source is not None
    assert point.epoch is not None
    if run_status(source.run_dir).get("status") != "finished":
        with point_lock(source.lock_path) as lock:
            if not lock.held:
                outcome.message = f"its training run {source.name} is locked by {describe_holder(lock.holder or {})}"
                return False
            if run_status(source.run_dir).get("status") != "finished":
                outcome.resumed = _train(source, console, show_progress, gpus)
                outcome.trained = True
    weights = source.run_dir / "backbones" / f"epoch-{point.epoch}.pt"
    if not weights.is_file():
        raise UsageError(f"{weights} not found: {source.run_dir} was trained without saving epoch {point.epoch}")
    adjusted = run_status(source.run_dir).get("adjusted")  # what training changed holds for its epochs too
    runs.save_config(point.run_dir, runs.as_recorded(point.config, source.run_dir))
    _link_or_copy(weights, point.run_dir / runs.BACKBONE)
    kept = [r for r in runs.read_metrics(source.run_dir) if r.get("epoch", 0) <= point.epoch]
    runs.atomic_write_text(point.run_dir / runs.METRICS, "".join(json.dumps(r) + "\n" for r in kept))
    runs.write_json(
        point.run_dir / runs.STATUS,
        {
            "status": "finished",
            "epochs_done": point.epoch,
            "derived_from": os.path.relpath(source.run_dir, point.run_dir),
            "weights": f"backbones/epoch-{point.epoch}.pt",
            **({"adjusted": adjusted} if adjusted else {}),
        },
    )
    return True


def run_point(point: SweepPoint, console: Console, show_progress: bool = True, gpus: int = 1) -> PointOutcome:
    """Bring one point to finished: skip, train, resume or assemble it, then probe what is missing.
    gpus > 1 (a launcher's task holding several GPUs): the training runs under torchrun (sweep/ddp.py)."""
    if point_state(point) == "finished":
        return PointOutcome(point, "skipped-finished")
    with point_lock(point.lock_path) as lock:
        if not lock.held:
            return PointOutcome(point, "skipped-locked", message=f"locked by {describe_holder(lock.holder or {})}")
        outcome = PointOutcome(point, "ran")
        if lock.took_over:
            outcome.message = f"took over the stale lock of {describe_holder(lock.took_over)}"
        state = point_state(point)
        if state == "finished":
            return PointOutcome(point, "skipped-finished")
        if state in ("new", "interrupted"):
            if point.source is not None:
                if not _assemble(point, outcome, console, show_progress, gpus):
                    outcome.status = "skipped-locked"
                    return outcome
            else:
                outcome.resumed = _train(point, console, show_progress, gpus)
                outcome.trained = True
        missing = missing_probes(point.run_dir, point.config)
        if missing:
            console.print(f"{point.name}: probing {', '.join(missing)}", markup=False)
            run_probes(
                point.run_dir,
                datasets=missing,
                device=point.config.train.device,
                console=console,
                show_progress=show_progress,
            )
            outcome.probed = True
    return outcome


def run_sweep(
    points: list[SweepPoint],
    shard: tuple[int, int] | str | None = None,
    dry_run: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
    report: bool = True,
) -> list[PointOutcome]:
    """Run (or, dry_run, print) this shard's points in order, then print the outcomes and the report."""
    console = console or Console()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("a sweep runs as one process per shard: use --shard I/N (one per GPU), not torchrun")
    selected = shard_points(points, shard)
    check_conflicts(selected)
    sweep_dirs = unique([p.sweep_dir for p in points])
    label = f" (shard {shard if isinstance(shard, str) else '/'.join(map(str, shard))})" if shard else ""
    console.print(
        f"sweep {', '.join(map(str, sweep_dirs))}: {len(selected)} of {len(points)} points{label}", highlight=False
    )
    outcomes: list[PointOutcome] = []
    if dry_run:
        for point in selected:
            state, commands = plan_commands(point)
            console.print(
                f"# {point.name}: {state}{lock_note(point.lock_path)}", markup=False, highlight=False, soft_wrap=True
            )
            for command in commands:
                console.print(command, markup=False, highlight=False, soft_wrap=True)
            outcomes.append(PointOutcome(point, "dry-run", message=state, commands=commands))
        return outcomes
    # a signal unwinds like an error: the point's lock is released, and rerunning the sweep resumes it
    with (
        signals.handle_signals(),
        signals.keeping("finished points are kept: run the same `mim sweep` again to continue"),
    ):
        for point in selected:
            outcome = run_point(point, console, show_progress)
            if outcome.status != "ran":
                note = f" ({outcome.message})" if outcome.message else ""
                console.print(f"{point.name}: {outcome.status}{note}", markup=False, highlight=False)
            outcomes.append(outcome)
    if outcomes:
        for renderable in outcome_table(outcomes, console.width):
            console.print(renderable)
    if report:
        for sweep_dir in sweep_dirs:
            print_report(sweep_dir, console)
    return outcomes


def sweep(
    kind: str,
    presets: str | Sequence[str],
    values: str | Sequence[Any] | None = None,
    overrides: Sequence[str] | None = None,
    set_values: Sequence[str] | None = None,
    out_root: str | Path = "runs",
    name: str | None = None,
    shard: tuple[int, int] | str | None = None,
    dry_run: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
    trust_plugins: bool = False,
    random_init: bool = False,
) -> list[PointOutcome]:
    """`mim sweep` in one call: plan_sweep, then run_sweep. A dry run imports no plugin."""
    plugins = READ if dry_run else training_plugins(list(overrides or []), trust_plugins)
    points = plan_sweep(kind, presets, values, overrides, set_values, out_root, name, plugins, random_init)
    return run_sweep(points, shard, dry_run, console, show_progress)
