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
from rich.table import Table

from mimcli.errors import UsageError

if TYPE_CHECKING:
    from mimcli.config import RunConfig
    from mimcli.probe.records import ProbeResult

app = typer.Typer(
    name="mim",
    help="Pretrain, probe and report self-supervised representations, with and without I(z, v) regularisers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain text: `mim[plots]` and `[a, b]` must show as written
)
console = Console()
err_console = Console(stderr=True)
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT)

PresetOption = Annotated[
    str | None, typer.Option("--preset", "-p", help="Preset name (see `mim presets`) or path to a TOML file.")
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
        from mimcli import __version__

        console.print(f"mim {__version__}", highlight=False)
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
    import subprocess

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
    raise typer.Exit(subprocess.call(command))


def _train(
    preset: str | None,
    overrides: list[str] | None,
    out: Path | None,
    resume: bool,
    force: bool,
    quiet: bool,
    expect_supervised: bool,
    gpus: int = 1,
) -> None:
    import contextlib
    import os

    from mimcli import distributed, runs
    from mimcli.config import apply_overrides, build_config, load_config, read_toml
    from mimcli.lock import run_lock
    from mimcli.train import pretrain

    if resume and out is not None and (out / runs.CONFIG).is_file() and preset is None:
        raw = apply_overrides(read_toml(out / runs.CONFIG), list(overrides or []))
        config = build_config(raw, str(out / runs.CONFIG), stored=True)
    else:
        config = load_config(preset, overrides)
    if expect_supervised != (config.method.name == "supervised"):
        command = "mim supervised" if config.method.name == "supervised" else "mim pretrain"
        raise UsageError(f"method.name={config.method.name!r} trains with `{command}`")
    if gpus > 1:
        _relaunch_under_torchrun(gpus)
    run_dir = run_dir_for(config, out)
    # rank 0 holds the run directory's lock for all ranks (they run together or not at all)
    lock = run_lock(run_dir) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
    with lock, distributed.process_group(config.train.device):  # under torchrun: DDP, one process per GPU
        pretrain(config, run_dir, resume=resume, force=force, console=console, show_progress=not quiet)
        on_rank_0 = distributed.is_main()
        if config.probe.datasets and distributed.is_distributed():
            from mimcli.probe import extract_features_distributed

            extract_features_distributed(run_dir, config, console)
    if config.probe.datasets and on_rank_0:  # probes run on rank 0 alone, on the features cached above
        from mimcli.probe import run_probes
        from mimcli.report.probe_table import print_probe_table

        result = run_probes(run_dir, device=config.train.device, console=console)
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
) -> None:
    """Self-supervised pretraining (SimCLR, BYOL, Barlow Twins) with an optional regulariser."""
    _train(preset, set_, out, resume, force, no_progress, expect_supervised=False, gpus=gpus)


@app.command()
def supervised(
    preset: PresetOption = "supervised",
    set_: SetOption = None,
    out: OutOption = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
    no_progress: QuietOption = False,
    gpus: GpusOption = 1,
) -> None:
    """Supervised pretraining (cross-entropy, one view) with an optional regulariser."""
    _train(preset, set_, out, resume, force, no_progress, expect_supervised=True, gpus=gpus)


@app.command()
def presets() -> None:
    """List the named presets with a one-line description each."""
    from mimcli.config import list_presets, read_toml

    table = Table(title="presets")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, path in sorted(list_presets().items()):
        run = read_toml(path).get("run", {})
        reproduces = run.get("reproduces", "")
        table.add_row(name, run.get("description", "") + (f"\nreproduces: {reproduces}" if reproduces else ""))
    console.print(table)


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
    seeds: Annotated[str | None, typer.Option(help="Comma-separated probe seeds (mean and std reported).")] = None,
    data_root: Annotated[
        str | None, typer.Option(help="Where torchvision data sets live (default: data.root).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
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
        bool, typer.Option("--info", help="Also measure I(z; v), I(z1; z2), I(z; factor) (mimcli.diagnostics).")
    ] = False,
) -> None:
    """Probe frozen features (cached in HDF5) on the source and transfer data sets."""
    from mimcli.probe.foreign import ModelOptions, ProbeChoices, probe_model
    from mimcli.report.probe_table import print_probe_table
    from mimcli.runs import load_run_config

    if protocol is not None and protocol not in ("linear", "knn", "regression"):
        raise UsageError(f"--protocol {protocol!r}: choose linear, knn or regression")
    try:
        layer_list = [int(x) for x in _csv(layers) or []] if layers else None
        seed_list = [int(x) for x in _csv(seeds) or []] if seeds else None
    except ValueError:
        raise UsageError("--layers and --seeds take comma-separated integers") from None
    options = ModelOptions(format_, stem, _csv(feature_layers), pool, input_size, norm, seed, list(set_ or []))
    choices = ProbeChoices(_csv(datasets), protocol, layer_list, seed_list, data_root, device)
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
    kind: Annotated[str, typer.Argument(help="lambda | epochs | seeds | regularizers | grid.")],
    preset: Annotated[list[str], typer.Option("--preset", "-p", help="Base preset(s) (repeatable).")],
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
    no_progress: QuietOption = False,
) -> None:
    """A grid of runs, each pretrained and probed; finished points are skipped, interrupted ones resumed."""
    from mimcli.sweep import sweep as run_sweep

    outcomes = run_sweep(
        kind, preset, values, set_, set_values, out, name, shard, dry_run, console, show_progress=not no_progress
    )
    locked = [o for o in outcomes if o.status == "skipped-locked"]
    if locked:
        err_console.print(f"{len(locked)} point(s) are being trained by another process; rerun to finish them")
        raise typer.Exit(3)


@app.command()
def report(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Run directories or folders holding them (default runs/).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", "-f", help="table | markdown | json | csv.")] = "table",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Folder for the figures, PDF + PNG (needs mim[plots]).")] = None,
    compare: Annotated[str | None, typer.Option(help="paper | report: reference numbers beside each cell.")] = None,
    metric: Annotated[
        str, typer.Option(help="acc_best_test (paper's rule) | acc_val_selected (honest).")
    ] = "acc_best_test",
) -> None:
    """The report's tables (models x data sets, lambda, epochs) and plots, from finished, probed runs."""
    from mimcli.report import run_report

    run_report(list(paths or []), format_, out, plots, compare, metric, console=console)


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

    counts = pack_folder(folder, out, say=console.print)
    console.print(f"wrote {out}: " + ", ".join(f"{split} {n} images" for split, n in counts.items()), highlight=False)


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)


def _command_line_error() -> type[Exception]:
    """The base class of the usage errors typer raises (an unknown option, a missing argument).

    typer up to 0.24 raises click's ClickException; later releases vendor click and raise their own copy,
    and click is no longer installed with them. `typer.BadParameter` derives from that base in every
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
        code = app(standalone_mode=False)
    except UsageError as error:
        _error(escape(str(error)))
        sys.exit(2)
    except OSError as error:  # unwritable folder, a file where a folder should be, disk full...
        where = f"{error.filename}: " if error.filename else ""
        _error(escape(f"{where}{error.strerror or error}"))
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except command_line_error as error:
        error.show()  # type: ignore[attr-defined]  # ClickException.show: "Usage: ..." and "Error: ..."
        sys.exit(int(error.exit_code))  # type: ignore[attr-defined]
    except KeyboardInterrupt:  # outside typer's command call (while importing, say)
        code = INTERRUPTED
    if code == INTERRUPTED:  # typer's answer to Ctrl-C, or torchrun workers' under --gpus
        err_console.print("interrupted: finished epochs are saved; continue with --resume")
    sys.exit(code if isinstance(code, int) else 0)
