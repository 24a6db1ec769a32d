"""`mim sweep`: a grid of runs, each a normal run directory, trained and probed; re-running completes it.

    runs/<sweep>/<point>/       a run directory like any other (config.toml, metrics.jsonl, backbone.pt,
                                run.json, probe.json), so `mim report runs/<sweep>` reads it
    runs/<sweep>/<point>.lock   present while a process works on the point: pid, host, process start time

Kinds: `lambda` (regularizer.lambda; points per preset), `epochs` (train.epochs: ONE training to the
largest value keeping backbones at the others; every other point is assembled from those weights),
`seeds` (train.seed), `regularizers` (regularizer.kind, each with the lambda of its own preset) and
`grid` (the product of `section.key=v1,v2,...` axes).

A point is finished when its run.json says "finished" and probe.json holds every data set of its
[probe] section for the current backbone.pt; a finished point is skipped, an interrupted one (a
checkpoint, not finished) is resumed, a trained but unprobed one is probed. A point locked by a
live process is skipped; a lock left by a dead process on this host is taken over. See docs/sweeps.md.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from rich.console import Console
from rich.table import Table

from mimcli import runs
from mimcli.config import RegularizerSection, RunConfig, check_folder_name, load_config, parse_override
from mimcli.errors import UsageError
from mimcli.lock import _process_start, describe_holder, holder_alive, lock_note, lock_path, point_lock  # noqa: F401
from mimcli.probe import run_probes
from mimcli.train import pretrain

KINDS = ("lambda", "epochs", "seeds", "regularizers", "grid")
DEFAULT_REGULARIZERS = ("none", "rc", "lbe")
REGULARIZER_KINDS: tuple[str, ...] = get_args(RegularizerSection.model_fields["kind"].annotation)
DEFAULT_LAMBDA: float = RegularizerSection.model_fields["lam"].default
SWEPT_KEYS = {  # keys a kind sets itself: a --set of one of them would silently undo the sweep
    "lambda": ("regularizer.lambda",),
    "epochs": ("train.epochs", "train.save_epochs"),
    "seeds": ("train.seed",),
    "regularizers": ("regularizer.kind",),
}


@dataclass
class SweepPoint:
    """One run of a sweep. `overrides` (the user's --set first, then the point's own) on `preset` give `config`."""

    name: str  # relative to sweep_dir: "simclr-rc/lambda-0.01", "seed-1", "epochs-100"
    preset: str
    overrides: list[str]
    run_dir: Path
    config: RunConfig
    sweep_dir: Path
    source: SweepPoint | None = None  # epochs sweep: the training run whose backbones/epoch-N.pt this point is
    epoch: int | None = None

    @property
    def lock_path(self) -> Path:
        return lock_path(self.run_dir)


@dataclass
class PointOutcome:
    point: SweepPoint
    status: str  # "ran" | "skipped-finished" | "skipped-locked" | "dry-run"
    trained: bool = False  # this process trained (or resumed) the point's run, or its epochs-sweep source
    resumed: bool = False
    probed: bool = False
    message: str = ""
    commands: list[str] = field(default_factory=list)  # dry run: what would run now


# --------------------------------------------------------------------------------------------- planning


def split_values(text: str) -> list[str]:
    """`0.1, 1` -> ["0.1", "1"]; commas inside [...], {...} or quotes do not split (`[2,3],[4]`)."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _value_texts(values: str | Sequence[Any] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    texts: list[str] = []
    for value in values:
        texts.extend(split_values(value) if isinstance(value, str) else [str(value)])
    return texts


def _number(text: str, kind: str, cast: type) -> Any:
    try:
        value = cast(text)
    except ValueError:
        noun = "an integer" if cast is int else "a number"
        raise UsageError(f"{kind} sweep: {text!r} is not {noun}") from None
    if cast is float and not math.isfinite(value):  # nan, inf: a run that trains to NaN
        raise UsageError(f"{kind} sweep: {text!r} is not a finite number")
    return value


def _key(text: str) -> str:
    """The dotted key of an override, `lam` spelled `lambda`."""
    path, _ = parse_override(text)
    return ".".join("lambda" if part == "lam" else part for part in path)


def _safe(text: str) -> str:
    return re.sub(r"[^\w.+-]+", "-", text).strip("-") or "x"


def _stem(preset: str) -> str:
    return Path(preset).stem if preset.endswith(".toml") else preset


def _unique(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _grid_axes(set_values: Sequence[str]) -> list[tuple[str, list[str]]]:
    axes: list[tuple[str, list[str]]] = []
    for text in set_values:
        key_text, sep, raw = text.partition("=")
        values = split_values(raw)
        if not sep or not values:
            raise UsageError(f"--set-values {text!r}: expected section.key=v1,v2,...")
        key = _key(f"{key_text}={values[0]}")
        if key in (k for k, _ in axes):
            raise UsageError(f"--set-values names {key} twice")
        axes.append((key, _unique(values)))
    return axes


def _grid_points(axes: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    leaves = [key.rsplit(".", 1)[-1] for key, _ in axes]
    labels = [leaf if leaves.count(leaf) == 1 else key for leaf, (key, _) in zip(leaves, axes)]
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        name = "_".join(f"{label}-{_safe(value)}" for label, value in zip(labels, combo))
        points.append((name, [f"{key}={value}" for (key, _), value in zip(axes, combo)]))
    return points


def preset_lambda(preset: str, method: str, kind: str) -> float:
    """The lambda a regulariser gets in a regularizers sweep: that of preset `<preset>-<kind>` (e.g.
    quickstart-rc), else of `<method>-<kind>` (simclr-rc), else the default."""
    from mimcli.config import list_presets

    known = list_presets()
    for name in (f"{Path(preset).stem}-{kind}", f"{method}-{kind}"):
        if name in known:
            return load_config(name).regularizer.lam
    return DEFAULT_LAMBDA


def _point_overrides(kind: str, preset: str, base: RunConfig, texts: list[str], user_keys: set[str],
                     axes: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """(label, the point's own overrides) for each point of one preset; epochs: the training run last."""
    if kind == "lambda":
        if base.regularizer.kind == "none":
            raise UsageError(f"preset {preset!r} has regularizer.kind='none': lambda changes nothing "
                             f"(sweep a regularised preset, e.g. {base.method.name}-rc)")
        return [(f"lambda-{lam:g}", [f"regularizer.lambda={lam!r}"])
                for lam in _unique([_number(t, kind, float) for t in texts])]
    if kind == "seeds":
        return [(f"seed-{s}", [f"train.seed={s}"]) for s in _unique([_number(t, kind, int) for t in texts])]
    if kind == "grid":
        return _grid_points(axes)
    if kind == "regularizers":
        specs = []
        for reg in _unique([t.strip("'\"") for t in texts]):
            if reg not in REGULARIZER_KINDS:
                raise UsageError(f"regularizers sweep: unknown regulariser {reg!r}; "
                                 f"choose from {', '.join(REGULARIZER_KINDS)}")
            extra = [f"regularizer.kind={reg}"]
            if reg != "none" and "regularizer.lambda" not in user_keys:
                extra.append(f"regularizer.lambda={preset_lambda(preset, base.method.name, reg)!r}")
            specs.append((f"kind-{reg}", extra))
        return specs
    epochs = sorted(_unique([_number(t, kind, int) for t in texts]))
    if epochs[0] < 1:
        raise UsageError(f"epochs sweep: {epochs[0]} is not a positive number of epochs")
    *smaller, last = epochs
    kept = ",".join(map(str, smaller))
    return [*((f"epochs-{e}", [f"train.epochs={e}"]) for e in smaller),
            (f"epochs-{last}", [f"train.epochs={last}", f"train.save_epochs=[{kept}]"])]


def plan_sweep(kind: str, presets: str | Sequence[str], values: str | Sequence[Any] | None = None,
               overrides: Sequence[str] | None = None, set_values: Sequence[str] | None = None,
               out_root: str | Path = "runs", name: str | None = None) -> list[SweepPoint]:
    """The points of a sweep, every config built and validated (nothing is written).

    values: the swept values (strings may be comma-separated); regularizers defaults to none,rc,lbe.
    overrides: `section.key=value` applied to every point. set_values: the grid's `section.key=v1,v2` axes.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown sweep kind {kind!r}; choose one of {', '.join(KINDS)}")
    presets = _unique([presets] if isinstance(presets, str) else list(presets))
    if not presets:
        raise UsageError("a sweep needs at least one --preset")
    user = list(overrides or [])
    user_keys = {_key(text) for text in user}
    texts = _value_texts(values)
    if kind == "grid":
        if texts:
            raise UsageError("the grid sweep takes its values from --set-values section.key=v1,v2,...")
        axes = _grid_axes(set_values or [])
        if not axes:
            raise UsageError("the grid sweep needs at least one --set-values section.key=v1,v2,...")
        swept = tuple(key for key, _ in axes)
    else:
        axes = []
        if set_values:
            raise UsageError("--set-values is for the grid sweep; this sweep takes --values")
        if kind == "regularizers" and not texts:
            texts = list(DEFAULT_REGULARIZERS)
        if not texts:
            raise UsageError(f"the {kind} sweep needs --values, e.g. {'0.01,0.1,1' if kind == 'lambda' else '1,2,3'}")
        swept = SWEPT_KEYS[kind]
    clash = sorted(user_keys.intersection(swept))
    if clash:
        raise UsageError(f"--set {clash[0]} clashes with the {kind} sweep, which sets it per point")

    if name is not None:
        try:
            check_folder_name(name)
        except ValueError as error:
            raise UsageError(f"--name {name!r}: {error}") from None
    sweep_dir = Path(out_root) / (name or f"{kind}-{'+'.join(_stem(p) for p in presets)}")
    prefix = len(presets) > 1 or kind == "lambda"
    points: list[SweepPoint] = []
    for preset in presets:
        base = load_config(preset, user)

        made = []
        for label, extra in _point_overrides(kind, preset, base, texts, user_keys, axes):
            point_name = f"{_stem(preset)}/{label}" if prefix else label
            made.append(SweepPoint(point_name, preset, [*user, *extra], sweep_dir / point_name,
                                   load_config(preset, [*user, *extra]), sweep_dir))
        if kind == "epochs":  # the last point is the one training; the others are read from its backbones
            for derived in made[:-1]:
                derived.source, derived.epoch = made[-1], derived.config.train.epochs
        points += made
    names = [p.name for p in points]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UsageError(f"two points of the sweep would share the directory {duplicate!r}")
    return points


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (1-based) -> (I, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 1/4")
    return check_shard((int(match[1]), int(match[2])))


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {index}/{count}: need 1 <= I <= N")
    return index, count


def shard_points(points: list[SweepPoint], shard: tuple[int, int] | str | None) -> list[SweepPoint]:
    """Points i (0-based) with i % N == I - 1: shards 1/N .. N/N cover the sweep exactly once."""
    if shard is None:
        return list(points)
    index, count = parse_shard(shard) if isinstance(shard, str) else check_shard(shard)
    return [p for i, p in enumerate(points) if i % count == index - 1]


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM (SLURM's time limit, `kill`) unwinds like Ctrl-C, so locks are released and the sweep can resume."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --------------------------------------------------------------------------------------------- point state


def _status(run_dir: Path) -> dict[str, Any]:
    try:
        status = runs.read_json(run_dir / runs.STATUS)
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _dataset_key(name: str) -> str:
    kind, sep, arg = name.partition(":")
    return kind.lower() + sep + arg


def missing_probes(run_dir: Path, config: RunConfig) -> list[str]:
    """The [probe] data sets that probe.json lacks for the current backbone.pt (all of them if it is stale);
    a data set recorded as 'missing' (not on disk last time) counts as lacking, so a rerun retries it."""
    wanted = list(config.probe.datasets)
    if not wanted:
        return []
    try:
        data = runs.read_json(run_dir / runs.PROBE)
        done = {_dataset_key(record["dataset"]) for record in data["results"] if record.get("status") != "missing"}
        current = data["checkpoint"]["sha256"] == runs.file_sha256(run_dir / runs.BACKBONE)
    except (OSError, ValueError, KeyError, TypeError):
        return wanted
    return [name for name in wanted if not current or _dataset_key(name) not in done]


def point_state(point: SweepPoint) -> str:
    """new | interrupted (a checkpoint to resume) | trained (probes missing) | finished."""
    if _status(point.run_dir).get("status") == "finished":
        return "trained" if missing_probes(point.run_dir, point.config) else "finished"
    if point.source is None and (point.run_dir / runs.CHECKPOINT).is_file():
        return "interrupted"
    return "new"


def check_conflicts(points: list[SweepPoint]) -> None:
    """Refuse to resume or skip a point whose directory holds a run of another config."""
    every = {q.run_dir: q for p in points for q in (p, p.source) if q is not None}
    for point in every.values():
        if (point.run_dir / runs.CONFIG).is_file():
            diff = runs.config_diff(runs.load_run_config(point.run_dir), point.config)
            if diff:
                raise UsageError(f"{point.run_dir} holds a run of another config ({'; '.join(diff[:3])}): "
                                 "choose another sweep --name or remove that directory")


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
        raise UsageError(f"{run_dir} holds files that are not an unstarted run ({', '.join(sorted(unknown)[:3])}): "
                         "remove them or choose another sweep --name")
    shutil.rmtree(run_dir)


def _train(point: SweepPoint, console: Console, show_progress: bool) -> bool:
    """Train (or resume) the point's run; True when it resumed."""
    resume = (point.run_dir / runs.CHECKPOINT).is_file()
    if not resume:
        _clear_unstarted(point.run_dir)
    console.print(f"{point.name}: {'resuming' if resume else 'training'} in {point.run_dir}", markup=False)
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


def _assemble(point: SweepPoint, outcome: PointOutcome, console: Console, show_progress: bool) -> bool:
    """An epochs-sweep point from its source run's backbones/epoch-N.pt (training the source first if
    needed); False when the source is locked by another live process."""
    source = point.source
    assert source is not None and point.epoch is not None
    if _status(source.run_dir).get("status") != "finished":
        with point_lock(source.lock_path) as lock:
            if not lock.held:
                outcome.message = f"its training run {source.name} is locked by {describe_holder(lock.holder or {})}"
                return False
            if _status(source.run_dir).get("status") != "finished":
                outcome.resumed = _train(source, console, show_progress)
                outcome.trained = True
    weights = source.run_dir / "backbones" / f"epoch-{point.epoch}.pt"
    if not weights.is_file():
        raise UsageError(f"{weights} not found: {source.run_dir} was trained without saving epoch {point.epoch}")
    runs.save_config(point.run_dir, point.config)
    _link_or_copy(weights, point.run_dir / runs.BACKBONE)
    kept = [r for r in runs.read_metrics(source.run_dir) if r.get("epoch", 0) <= point.epoch]
    runs.atomic_write_text(point.run_dir / runs.METRICS, "".join(json.dumps(r) + "\n" for r in kept))
    runs.write_json(point.run_dir / runs.STATUS, {
        "status": "finished", "epochs_done": point.epoch,
        "derived_from": os.path.relpath(source.run_dir, point.run_dir), "weights": f"backbones/epoch-{point.epoch}.pt"})
    return True


def run_point(point: SweepPoint, console: Console, show_progress: bool = True) -> PointOutcome:
    """Bring one point to finished: skip, train, resume or assemble it, then probe what is missing."""
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
                if not _assemble(point, outcome, console, show_progress):
                    outcome.status = "skipped-locked"
                    return outcome
            else:
                outcome.resumed = _train(point, console, show_progress)
                outcome.trained = True
        missing = missing_probes(point.run_dir, point.config)
        if missing:
            console.print(f"{point.name}: probing {', '.join(missing)}", markup=False)
            run_probes(point.run_dir, datasets=missing, device=point.config.train.device, console=console)
            outcome.probed = True
    return outcome


def outcome_table(outcomes: list[PointOutcome]) -> Table:
    table = Table(title=f"sweep {outcomes[0].point.sweep_dir}" if outcomes else "sweep")
    for column in ("point", "status", "trained", "probed", "note"):
        table.add_column(column)
    for o in outcomes:
        trained = ("resumed" if o.resumed else "yes") if o.trained else "-"
        table.add_row(o.point.name, o.status, trained, "yes" if o.probed else "-", o.message)
    return table


def print_report(sweep_dir: Path, console: Console) -> None:
    """The report table of the sweep's runs (mimcli.report), when that module is there."""
    try:
        from mimcli.report import run_report
    except ModuleNotFoundError as error:
        if error.name != "mimcli.report":
            raise
        console.print(f"(no report module: probe results are in {sweep_dir}/**/probe.json)")
        return
    try:
        run_report([sweep_dir], fmt="table", console=console)
    except UsageError as error:
        console.print(f"report: {error}")


def run_sweep(points: list[SweepPoint], shard: tuple[int, int] | str | None = None, dry_run: bool = False,
              console: Console | None = None, show_progress: bool = True, report: bool = True) -> list[PointOutcome]:
    """Run (or, dry_run, print) this shard's points in order, then print the outcomes and the report."""
    console = console or Console()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("a sweep runs as one process per shard: use --shard I/N (one per GPU), not torchrun")
    selected = shard_points(points, shard)
    check_conflicts(selected)
    sweep_dirs = _unique([p.sweep_dir for p in points])
    label = f" (shard {shard if isinstance(shard, str) else '/'.join(map(str, shard))})" if shard else ""
    console.print(f"sweep {', '.join(map(str, sweep_dirs))}: {len(selected)} of {len(points)} points{label}",
                  highlight=False)
    outcomes: list[PointOutcome] = []
    if dry_run:
        for point in selected:
            state, commands = plan_commands(point)
            console.print(f"# {point.name}: {state}{lock_note(point.lock_path)}", markup=False, highlight=False,
                          soft_wrap=True)
            for command in commands:
                console.print(command, markup=False, highlight=False, soft_wrap=True)
            outcomes.append(PointOutcome(point, "dry-run", message=state, commands=commands))
        return outcomes
    with _sigterm_raises():
        for point in selected:
            outcome = run_point(point, console, show_progress)
            if outcome.status != "ran":
                note = f" ({outcome.message})" if outcome.message else ""
                console.print(f"{point.name}: {outcome.status}{note}", markup=False, highlight=False)
            outcomes.append(outcome)
    if outcomes:
        console.print(outcome_table(outcomes))
    if report:
        for sweep_dir in sweep_dirs:
            print_report(sweep_dir, console)
    return outcomes


def sweep(kind: str, presets: str | Sequence[str], values: str | Sequence[Any] | None = None,
          overrides: Sequence[str] | None = None, set_values: Sequence[str] | None = None,
          out_root: str | Path = "runs", name: str | None = None, shard: tuple[int, int] | str | None = None,
          dry_run: bool = False, console: Console | None = None, show_progress: bool = True) -> list[PointOutcome]:
    """`mim sweep` in one call: plan_sweep, then run_sweep."""
    points = plan_sweep(kind, presets, values, overrides, set_values, out_root, name)
    return run_sweep(points, shard, dry_run, console, show_progress)
