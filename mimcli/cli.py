"""`mim`: a thin typer app. Each command parses, loads the config and calls one function.

Bad input of any kind (UsageError) becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mimcli import signals
from mimcli.errors import UsageError, allocation_failure

if TYPE_CHECKING:
    from mimcli.config import RunConfig
    from mimcli.probe.records import ProbeResult

app = typer.Typer(
    name="mim",
    help="Pretrain, probe and report self-supervised representations, with and without I(z, v) regularisers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain text: `[plots]` and `[a, b]` must show as written
)
console = Console()
err_console = Console(stderr=True)
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT); SIGTERM 143, SIGHUP 129 (mimcli/signals.py)

PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset", "-p", help="Preset name (see `mim presets`), or a TOML file: a name ending in .toml or holding a /."
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable)."),
]
OutOption = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<run name>).")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in the run directory.")]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force", help="Replace an existing mim run (a folder mim wrote, nothing else in it) and start over."
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--no-progress", help="No live bar: one flushed line per epoch (and every train.print_every steps), for logs."
    ),
]
TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust-plugins",
        help="Import the plugin files that the preset or the run's config.toml names in run.plugins "
        "(they run as you; files named by your own --set need no flag). Reading never imports them.",
    ),
]
GpusOption = Annotated[
    int,
    typer.Option(
        "--gpus",
        min=1,
        help="Train on N GPUs of this machine: re-runs the command under torchrun "
        "(python -m torch.distributed.run --standalone --nproc_per_node N). Several nodes: call torchrun yourself "
        "(docs/distributed.md).",
    ),
]


def _version(value: bool) -> None:
    if value:
        from mimcli import DISTRIBUTION, __version__

        # The distribution's name tells this mim from OpenMMLab's, which also installs a `mim` command.
        console.print(f"mim {__version__} ({DISTRIBUTION})", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print mim's version and exit.")
    ] = False,
) -> None:
    """Pretrain, probe and report self-supervised representations, with and without I(z, v) regularisers."""


def run_dir_for(config: RunConfig, out: Path | None) -> Path:
    return Path(out or config.run.out or Path("runs") / config.run.name)


def _relaunch_under_torchrun(gpus: int) -> None:
    """`--gpus N`: run this very command line (less --gpus) as N torchrun workers; exit with their status."""
    import shlex

    import torch

    from mimcli import distributed

    if distributed.launched_by_torchrun():
        raise UsageError("--gpus launches torchrun itself: leave it out when running under torchrun")
    if torch.cuda.is_available() and torch.cuda.device_count() < gpus:
        raise UsageError(f"--gpus {gpus}, but this machine has {torch.cuda.device_count()} CUDA devices")
    args, rest = [], iter(sys.argv[1:])
    for arg in rest:
        if arg == "--gpus":
            next(rest, None)
        elif not arg.startswith("--gpus="):
            args.append(arg)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(gpus),
        "-m",
        "mimcli",
        *args,
    ]
    where = "" if torch.cuda.is_available() else " (no CUDA device: CPU processes, gloo)"
    err_console.print(f"launching {gpus} processes{where}: {shlex.join(command)}", highlight=False, soft_wrap=True)
    raise typer.Exit(signals.run_forwarding_signals(command))  # torchrun stops its workers, which stop themselves


def _announce_downloads(config: RunConfig) -> None:
    """Before training: the probe data sets that the probes after it will download, with their sizes."""
    import os

    from mimcli.data.transfer import describe_downloads, pending_downloads

    pending = pending_downloads(config.probe.datasets, config.data.root) if config.data.download else []
    if pending and os.environ.get("RANK", "0") == "0":
        line = describe_downloads(pending, config.data.root) + " (set probe.datasets to choose)"
        console.print(line, highlight=False)


def _train(
    preset: str | None,
    overrides: list[str] | None,
    out: Path | None,
    resume: bool,
    force: bool,
    quiet: bool,
    expect_supervised: bool,
    gpus: int = 1,
    trust_plugins: bool = False,
) -> None:
    import contextlib
    import os

    from mimcli import distributed
    from mimcli.config import anchor_plugins, apply_overrides, build_config, load_config, read_toml, training_plugins
    from mimcli.rundir import runs
    from mimcli.rundir.lock import run_lock
    from mimcli.train.loop import pretrain

    plugins = training_plugins(overrides, trust_plugins)
    if resume and out is not None and (out / runs.CONFIG).is_file() and preset is None:
        raw = apply_overrides(anchor_plugins(read_toml(out / runs.CONFIG), out), list(overrides or []))
        config = build_config(raw, str(out / runs.CONFIG), stored=True, plugins=plugins)
    else:
        config = load_config(preset, overrides, plugins)
    if expect_supervised != (config.method.name == "supervised"):
        command = "mim supervised" if config.method.name == "supervised" else "mim pretrain"
        raise UsageError(f"method.name={config.method.name!r} trains with `{command}`")
    if gpus > 1:
        _relaunch_under_torchrun(gpus)
    run_dir = run_dir_for(config, out)
    _announce_downloads(config)

    def how_to_continue() -> str:
        return "continue with --resume" if (run_dir / runs.CHECKPOINT).is_file() else ""

    # rank 0 holds the run directory's lock for all ranks (they run together or not at all)
    lock = run_lock(run_dir) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
    # under torchrun: DDP, one process per GPU
    with signals.keeping(how_to_continue), lock, distributed.process_group(config.train.device):
        pretrain(config, run_dir, resume=resume, force=force, console=console, show_progress=not quiet)
        on_rank_0 = distributed.is_main()
        if config.probe.datasets and distributed.is_distributed():
            from mimcli.probe import extract_features_distributed

            extract_features_distributed(run_dir, config, console, show_progress=not quiet)
    if config.probe.datasets and on_rank_0:  # probes run on rank 0 alone, on the features cached above
        from mimcli.probe import run_probes
        from mimcli.report.probe_table import print_probe_table

        with signals.keeping(f"training finished; probe.json keeps each data set probed: `mim probe {run_dir}`"):
            result = run_probes(run_dir, device=config.train.device, console=console, show_progress=not quiet)
        print_probe_table(result, console)
        _exit_if_partial(result, config.probe.datasets)


@app.command()
def pretrain(
    preset: PresetOption = None,
    set_: SetOption = None,
    out: OutOption = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
    no_progress: QuietOption = False,
    gpus: GpusOption = 1,
    trust_plugins: TrustOption = False,
) -> None:
    """Self-supervised pretraining (SimCLR, BYOL, Barlow Twins) with an optional regulariser."""
    _train(preset, set_, out, resume, force, no_progress, False, gpus, trust_plugins)


@app.command()
def supervised(
    preset: PresetOption = "supervised",
    set_: SetOption = None,
    out: OutOption = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
    no_progress: QuietOption = False,
    gpus: GpusOption = 1,
    trust_plugins: TrustOption = False,
) -> None:
    """Supervised pretraining (cross-entropy, one view) with an optional regulariser."""
    _train(preset, set_, out, resume, force, no_progress, True, gpus, trust_plugins)


@app.command()
def presets() -> None:
    """List the named presets with a one-line description each."""
    from mimcli.config import list_presets, read_preset
    from mimcli.tables import Col, fit_table

    rows = []
    for name, path in sorted(list_presets().items()):
        run = read_preset(path).get("run", {})  # a preset extending another inherits its description
        reproduces = run.get("reproduces", "")
        rows.append([name, escape(run.get("description", "") + (f"\nreproduces: {reproduces}" if reproduces else ""))])
    columns = (Col("name", key=True, style="bold"), Col("description", wrap=True))
    for renderable in fit_table("presets", columns, rows, console.width):
        console.print(renderable)


def _csv(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command()
def probe(
    model: Annotated[
        str,
        typer.Argument(
            help="A run directory written by `mim pretrain`, or a model mim did not train: torchvision:NAME[:WEIGHTS], "
            "timm:NAME[:pretrained], a checkpoint file (mim, torchvision, solo-learn, lightly, InfoCL ResNets), "
            "or the probe directory such a probe wrote (docs/probing.md)."
        ),
    ],
    datasets: Annotated[str | None, typer.Option(help="Comma-separated: cifar10,dtd,... or imagefolder:PATH.")] = None,
    protocol: Annotated[str | None, typer.Option(help="linear | knn | regression.")] = None,
    layers: Annotated[str | None, typer.Option(help="Pooled blocks to probe: 4 or 2,3,4 (concatenated).")] = None,
    features: Annotated[
        str | None,
        typer.Option(
            help="standardized | raw: the probe reads each dimension standardised on the train split, or the features "
            "as they are (default: the run's probe.features; the cached features serve both, kept as two records)."
        ),
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated probe seeds (mean and std reported).")] = None,
    data_root: Annotated[
        str | None, typer.Option(help="Where torchvision data sets live (default: data.root).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    no_progress: Annotated[
        bool,
        typer.Option(
            "--no-progress", help="No live bar: a line every 50 batches, or every quarter of a linear probe, for logs."
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Probe directory of a model mim did not train (default runs/probe-<model>)."),
    ] = None,
    format_: Annotated[
        str,
        typer.Option("--format", help="Checkpoint layout: auto | solo-learn | lightly | infocl | torchvision | mim."),
    ] = "auto",
    stem: Annotated[
        str, typer.Option(help="A 3x3-stem checkpoint's stem: auto (by input size) | cifar | stl.")
    ] = "auto",
    feature_layers: Annotated[
        str | None, typer.Option(help="Three module names read as layers 2,3,4 (default layer2,layer3,layer4).")
    ] = None,
    pool: Annotated[str | None, typer.Option(help="avg | max | token (a ViT's class token); default avg.")] = None,
    input_size: Annotated[
        int | None, typer.Option(min=8, help="Image size in pixels (default: the model's own, else data.image_size).")
    ] = None,
    norm: Annotated[
        str, typer.Option(help="auto (the model's own, else per data set) | dataset | imagenet | M,M,M/S,S,S.")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of random initial weights.")] = 0,
    set_: SetOption = None,
    info: Annotated[
        bool, typer.Option("--info", help="Also measure I(z; v), I(z1; z2), I(z; factor) (mimcli.train.diagnostics).")
    ] = False,
) -> None:
    """Probe frozen features (cached in HDF5) on the source and transfer data sets."""
    from mimcli.probe.foreign import ModelOptions, ProbeChoices, probe_model
    from mimcli.report.probe_table import print_probe_table
    from mimcli.rundir.runs import load_run_config

    if protocol is not None and protocol not in ("linear", "knn", "regression"):
        raise UsageError(f"--protocol {protocol!r}: choose linear, knn or regression")
    if features is not None and features not in ("standardized", "raw"):
        raise UsageError(f"--features {features!r}: choose standardized or raw")
    try:
        layer_list = [int(x) for x in _csv(layers) or []] if layers else None
        seed_list = [int(x) for x in _csv(seeds) or []] if seeds else None
    except ValueError:
        raise UsageError("--layers and --seeds take comma-separated integers") from None
    options = ModelOptions(format_, stem, _csv(feature_layers), pool, input_size, norm, seed, list(set_ or []))
    choices = ProbeChoices(
        _csv(datasets), protocol, layer_list, seed_list, data_root, device, not no_progress, features
    )
    with signals.keeping("probe.json keeps each data set probed before the stop; run the same `mim probe` again"):
        run_dir, result = probe_model(model, choices, out=out, options=options, info=info, console=console)
    print_probe_table(result, console)
    _exit_if_partial(result, _csv(datasets) or load_run_config(run_dir).probe.datasets)


def _exit_if_partial(result: ProbeResult, names: list[str]) -> None:
    """A probe that could not reach some data set is a failure for a script: say which, exit 1."""
    from mimcli.probe import missing_datasets

    missing = missing_datasets(result, names)
    if missing:
        err_console.print(
            f"error: {len(missing)} of {len(names)} data sets could not be probed (not found: "
            f"{', '.join(missing)}); the others are saved in probe.json",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command()
def sweep(
    kind: Annotated[str, typer.Argument(help="lambda | epochs | seeds | regularizers | grid, or status.")],
    folder: Annotated[Path | None, typer.Argument(help="status: the sweep folder to show.")] = None,
    preset: Annotated[list[str] | None, typer.Option("--preset", "-p", help="Base preset(s) (repeatable).")] = None,
    values: Annotated[str | None, typer.Option(help="Comma-separated values to sweep (not for grid).")] = None,
    set_: SetOption = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option("--set-values", help="Grid axis section.key=v1,v2,... (repeatable; the grid is their product)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder holding sweeps.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(help="Sweep folder name (default <kind>-<preset>).")] = None,
    shard: Annotated[str | None, typer.Option(help="I/N: run only every N-th point, from the I-th.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the points and their commands only.")] = False,
    random_init: Annotated[
        bool,
        typer.Option("--random-init", help="Also probe the preset untrained (train.epochs=0), once per training seed."),
    ] = False,
    no_progress: QuietOption = False,
    trust_plugins: TrustOption = False,
    launcher: Annotated[
        str | None,
        typer.Option(help="slurm | local: submit the unfinished points as one job array (submitit, [slurm] extra)."),
    ] = None,
    partition: Annotated[str | None, typer.Option(help="Launcher: SLURM partition.")] = None,
    account: Annotated[str | None, typer.Option(help="Launcher: SLURM account.")] = None,
    gpus: Annotated[
        int | None, typer.Option(min=0, help="Launcher: GPUs per point (more than 1: DDP, as mim pretrain --gpus).")
    ] = None,
    cpus: Annotated[int | None, typer.Option(min=1, help="Launcher: CPUs per point.")] = None,
    mem: Annotated[str | None, typer.Option(help="Launcher: memory per point, as sbatch --mem (64G).")] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="Launcher: time limit per job (minutes, HH:MM:SS, D-HH:MM:SS).")
    ] = None,
    sbatch: Annotated[
        list[str] | None, typer.Option(help="Launcher: any other sbatch option, name=value or a flag (repeatable).")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Launcher: resubmit only the points whose job failed.")
    ] = False,
) -> None:
    """A grid of runs, each pretrained and probed; finished points are skipped, interrupted ones resumed.
    `mim sweep status DIR`: where each point of a sweep stands (done, running, queued, failed, not started)."""
    if kind == "status":
        from mimcli.sweep.output import print_status

        if folder is None:
            raise UsageError("mim sweep status needs the sweep folder: mim sweep status runs/<sweep>")
        print_status(folder, console)
        return
    if folder is not None:
        raise UsageError(f"unexpected argument {str(folder)!r}: only `mim sweep status` takes a folder")
    if launcher is not None:
        from mimcli.config import READ, training_plugins
        from mimcli.sweep import plan_sweep
        from mimcli.sweep.launch import launch_options, launch_sweep

        if shard is not None:
            raise UsageError("--shard splits a sweep by hand; a launcher submits every point that needs it")
        options = launch_options(launcher, partition, account, gpus, cpus, mem, time, sbatch or [])
        plugins = READ if dry_run else training_plugins(list(set_ or []), trust_plugins)
        points = plan_sweep(kind, preset or [], values, set_, set_values, out, name, plugins, random_init)
        if launch_sweep(points, options, retry_failed, dry_run, console):
            raise typer.Exit(1)  # the local launcher waited, and a point failed
        return
    launch: dict[str, object] = {"--partition": partition, "--account": account, "--gpus": gpus, "--cpus": cpus}
    launch |= {"--mem": mem, "--time": time, "--sbatch": sbatch, "--retry-failed": retry_failed or None}
    given = next((option for option, value in launch.items() if value is not None), None)
    if given:
        raise UsageError(f"{given} is an option of --launcher slurm|local")
    from mimcli.sweep import sweep as run_sweep

    outcomes = run_sweep(
        kind,
        preset or [],
        values,
        set_,
        set_values,
        out,
        name,
        shard,
        dry_run,
        console,
        show_progress=not no_progress,
        trust_plugins=trust_plugins,
        random_init=random_init,
    )
    locked = [o for o in outcomes if o.status == "skipped-locked"]
    if locked:
        err_console.print(f"{len(locked)} point(s) are being trained by another process; rerun to finish them")
        raise typer.Exit(3)


@app.command()
def report(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Run directories, run records or folders holding them (default runs/).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", "-f", help="table | markdown | json | csv.")] = "table",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Folder for figures, PDF + PNG (needs the [plots] extra).")] = None,
    compare: Annotated[str | None, typer.Option(help="paper | report: reference numbers beside each cell.")] = None,
    metric: Annotated[
        str, typer.Option(help="acc_best_test (paper's rule) | acc_val_selected (honest).")
    ] = "acc_best_test",
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out even when it is not a report mim wrote.")
    ] = False,
    records: Annotated[
        Path | None,
        typer.Option(help="Also write each run's record (JSON: config, probes, history) to this folder."),
    ] = None,
) -> None:
    """The report's tables (models x data sets, lambda, epochs) and plots, from finished, probed runs
    or their records (*.record.json)."""
    from mimcli.report import run_report

    with signals.keeping("the report is incomplete: run the same `mim report` again"):
        run_report(
            list(paths or []), format_, out, plots, compare, metric, console=console, force=force, records_dir=records
        )


@app.command()
def pack(
    folder: Annotated[
        Path,
        typer.Argument(
            help="An image folder: train/<class>/*.jpg (ImageNet's layout; val/ or test/ too if present), "
            "or <class>/*.jpg."
        ),
    ],
    out: Annotated[Path, typer.Argument(help="The pack to write (a new HDF5 file, e.g. imagenet.h5).")],
) -> None:
    """Pack an image folder into one HDF5 file of the encoded images; train or probe from it with data.root=OUT."""
    from mimcli.data.packing import pack_folder

    with signals.keeping(f"{out} was not written (its temporary file is removed)"):
        counts = pack_folder(folder, out, say=console.print)
    console.print(f"wrote {out}: " + ", ".join(f"{split} {n} images" for split, n in counts.items()), highlight=False)


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)


def _command_line_error() -> type[Exception]:
    """The base class of the usage errors typer raises (an unknown option, a missing argument).

    typer up to 0.25 raises click's ClickException; from 0.26 typer vendors click and raises its own copy,
    and click is no longer installed with it. `typer.BadParameter` derives from that base in every
    release, so its MRO names it through typer's public API, whichever typer is installed."""
    for base in typer.BadParameter.__mro__:
        if base.__name__ == "ClickException":
            return base
    return typer.BadParameter  # pragma: no cover - every typer so far has ClickException above it


def main() -> None:
    """Entry point: typer's usage errors keep their exit code (2); ours and the file system's become one
    line and exit 2; Ctrl-C exits 130 with what was kept. Non-standalone mode, because in standalone
    mode typer turns Ctrl-C into a plain exit 130 before we can say anything (here it returns 130)."""
    command_line_error = _command_line_error()
    try:
        with signals.handle_signals():
            code = app(standalone_mode=False)
    except signals.Stopped as stop:  # SIGTERM, SIGINT, SIGHUP: what was kept, exit 128 + the signal
        err_console.print(escape(stop.message()), highlight=False, soft_wrap=True)
        sys.exit(stop.exit_code)
    except UsageError as error:
        _error(escape(str(error)))
        sys.exit(2)
    except OSError as error:  # unwritable folder, a file where a folder should be, disk full...
        where = f"{error.filename}: " if error.filename else ""
        _error(escape(f"{where}{error.strerror or error}"))
        sys.exit(2)
    except (MemoryError, RuntimeError) as error:  # an allocator's refusal is one line; anything else is a bug
        message = allocation_failure(error)
        if message is None:
            raise
        _error(escape(message))
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except command_line_error as error:
        error.show()  # type: ignore[attr-defined]  # ClickException.show: "Usage: ..." and "Error: ..."
        sys.exit(int(error.exit_code))  # type: ignore[attr-defined]
    except KeyboardInterrupt:  # outside typer's command call (while importing, say)
        code = INTERRUPTED
    if code == INTERRUPTED:  # typer's answer to a Ctrl-C outside any command's notes
        err_console.print("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
