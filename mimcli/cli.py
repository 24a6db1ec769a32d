"""`mim`: a thin typer app. Each command parses, loads the config and calls one function.

Bad input of any kind (UsageError) becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from mimcli.errors import UsageError

app = typer.Typer(
    name="mim",
    help="Pretrain, probe and report self-supervised representations, with and without I(z, v) regularisers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

PresetOption = Annotated[
    Optional[str], typer.Option("--preset", "-p", help="Preset name (see `mim presets`) or path to a TOML file.")
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable)."),
]
OutOption = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (default runs/<run name>).")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in the run directory.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Delete an existing run directory and start over.")]
QuietOption = Annotated[bool, typer.Option("--no-progress", help="No progress bar (for logs).")]


def run_dir_for(config, out: Path | None) -> Path:
    return Path(out or config.run.out or Path("runs") / config.run.name)


def _train(preset: str | None, overrides: list[str] | None, out: Path | None, resume: bool, force: bool,
           quiet: bool, expect_supervised: bool) -> None:
    from mimcli import runs
    from mimcli.config import apply_overrides, build_config, load_config, read_toml
    from mimcli.train import pretrain

    if resume and out is not None and (out / runs.CONFIG).is_file() and preset is None:
        raw = apply_overrides(read_toml(out / runs.CONFIG), list(overrides or []))
        config = build_config(raw, str(out / runs.CONFIG))
    else:
        config = load_config(preset, overrides)
    if expect_supervised != (config.method.name == "supervised"):
        command = "mim supervised" if config.method.name == "supervised" else "mim pretrain"
        raise UsageError(f"method.name={config.method.name!r} trains with `{command}`")
    run_dir = run_dir_for(config, out)
    pretrain(config, run_dir, resume=resume, force=force, console=console, show_progress=not quiet)
    if config.probe.datasets:
        from mimcli.probe import run_probes

        run_probes(run_dir, None, None, None, None, None, device=config.train.device, console=console)


@app.command()
def pretrain(preset: PresetOption = None, set_: SetOption = None, out: OutOption = None, resume: ResumeOption = False,
             force: ForceOption = False, no_progress: QuietOption = False) -> None:
    """Self-supervised pretraining (SimCLR, BYOL, Barlow Twins) with an optional regulariser."""
    _train(preset, set_, out, resume, force, no_progress, expect_supervised=False)


@app.command()
def supervised(preset: PresetOption = "supervised", set_: SetOption = None, out: OutOption = None,
               resume: ResumeOption = False, force: ForceOption = False, no_progress: QuietOption = False) -> None:
    """Supervised pretraining (cross-entropy, one view) with an optional regulariser."""
    _train(preset, set_, out, resume, force, no_progress, expect_supervised=True)


@app.command()
def presets() -> None:
    """List the named presets with a one-line description each."""
    from mimcli.config import list_presets, read_toml

    table = Table(title="presets")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, path in sorted(list_presets().items()):
        table.add_row(name, read_toml(path).get("run", {}).get("description", ""))
    console.print(table)


def _csv(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command()
def probe(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mim pretrain`.")],
    datasets: Annotated[Optional[str], typer.Option(help="Comma-separated: cifar10,dtd,... or imagefolder:PATH.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="linear | knn | regression.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="Pooled blocks to probe: 4 or 2,3,4 (concatenated).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated probe seeds (mean and std reported).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Where torchvision data sets live (default: data.root).")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Probe frozen features (cached in HDF5) on the source and transfer data sets."""
    from mimcli.probe import run_probes

    if protocol is not None and protocol not in ("linear", "knn", "regression"):
        raise UsageError(f"--protocol {protocol!r}: choose linear, knn or regression")
    try:
        layer_list = [int(x) for x in _csv(layers)] if layers else None
        seed_list = [int(x) for x in _csv(seeds)] if seeds else None
    except ValueError:
        raise UsageError("--layers and --seeds take comma-separated integers") from None
    run_probes(run_dir, _csv(datasets), protocol, layer_list, seed_list, data_root, device=device, console=console)


def main() -> None:
    """Entry point: typer handles its own usage errors (exit 2); ours become one line and exit 2 too."""
    try:
        app()
    except UsageError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished epochs are saved; continue with --resume")
        sys.exit(130)
