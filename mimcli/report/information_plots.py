"""The information plane: records and PNGs from the estimates training wrote to metrics.jsonl (train.diagnostics).

Figures (one panel per source data set):
  information-plane   I(z; v) against I(z1; z2), one trajectory per run, points coloured by epoch
  information-epochs  both quantities against the epoch, one line per run
  information-factors I(z; factor) against the epoch, one panel per factor (data sets that know factors)
All use the matrix-based Renyi estimates, so the two axes share one estimator and one scale.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from mimcli.data.transfer import display_name
from mimcli.report.collect import Run, run_fields, source_key
from mimcli.report.naming import safe_name
from mimcli.rundir.runs import INFO_KEY as KEY

PLANE_X, PLANE_Y = "z1_z2_renyi", "z_v_renyi"
SHORT = {PLANE_X: "I(z1; z2)", PLANE_Y: "I(z; v)"}
LABELS = {key: f"{name}  [Renyi, nats]" for key, name in SHORT.items()}
FACTOR_PREFIX, FACTOR_SUFFIX = "z_", "_renyi"
NOT_FACTORS = {PLANE_Y, "z_v_ksg"}


def trajectory(run: Run) -> list[tuple[int, dict[str, float]]]:
    """(epoch, estimates) for every metrics.jsonl line that carries estimates, in epoch order."""
    points = [(int(m["epoch"]), m[KEY]) for m in run.metrics if isinstance(m.get(KEY), dict) and "epoch" in m]
    return sorted(points, key=lambda p: p[0])


def information_records(runs_: list[Run]) -> list[dict[str, Any]]:
    """Tidy records, one per (run, epoch, estimate): metric `info:<name>`, value in nats."""
    out = []
    for run in runs_:
        cfg = run.config
        for epoch, estimates in trajectory(run):
            for name, value in estimates.items():
                if name == "seconds" or not isinstance(value, (int, float)):
                    continue
                out.append(
                    {
                        **run_fields(run),
                        "dataset": source_key(cfg),
                        "task": "information",
                        "metric": f"info:{name}",
                        "value": float(value),
                        "protocol": None,
                        "layers": [4],
                        "epoch": epoch,
                    }
                )
    return out


def factor_names(runs_: list[Run]) -> list[str]:
    names: dict[str, None] = {}
    for run in runs_:
        for _, estimates in trajectory(run):
            for key in estimates:
                if key.startswith(FACTOR_PREFIX) and key.endswith(FACTOR_SUFFIX) and key not in NOT_FACTORS:
                    names.setdefault(key[len(FACTOR_PREFIX) : -len(FACTOR_SUFFIX)])
    return list(names)


def write_information_plots(runs_: list[Run], directory: Path) -> list[tuple[str, Path]]:
    """The information-plane PNGs (title, path) for runs that recorded estimates; [] when none did."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    by_source: dict[str, list[Run]] = defaultdict(list)
    for run in runs_:
        if any(PLANE_X in e and PLANE_Y in e for _, e in trajectory(run)):
            by_source[source_key(run.config)].append(run)
    if not by_source:
        return []
    # an epochs-sweep point cut from a longer run has the same trajectory, cut short: draw the longest once
    for source, members in by_source.items():
        members.sort(key=lambda r: -len(r.metrics))
        kept: list[Run] = []
        for run in members:
            if not any(other.metrics[: len(run.metrics)] == run.metrics for other in kept):
                kept.append(run)
        by_source[source] = kept
    drawn = [run for members in by_source.values() for run in members]
    sources = list(by_source)

    def name_of(run: Run) -> str:
        return f"{run.model} ({run.name})" if _ambiguous(drawn, run) else run.model

    written: list[tuple[str, Path]] = []

    def save(figure: Any, name: str, title: str) -> None:
        FigureCanvasAgg(figure)
        path = Path(directory) / f"{name}.png"
        figure.savefig(path, dpi=200, bbox_inches="tight")
        figure.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
        written.append((title, path))

    last_epoch = max(p[0] for runs in by_source.values() for r in runs for p in trajectory(r))
    norm = Normalize(1, max(last_epoch, 2))
    cmap = colormaps["viridis"]
    markers = "osD^v<>phX*"
    colours = colormaps["tab10"]

    def plot_over_epochs(axes: Any, key: str, runs_of_source: list[Run]) -> None:
        """One line per run: the estimate `key` at each epoch it was recorded."""
        for index, run in enumerate(runs_of_source):
            series = [(e, v[key]) for e, v in trajectory(run) if key in v]
            axes.plot(
                [p[0] for p in series],
                [p[1] for p in series],
                marker=markers[index % len(markers)],
                markersize=3,
                color=colours(index % 10),
                label=name_of(run),
            )

    figure = Figure(figsize=(6.5 * len(sources) + 1.5, 5))
    panels = figure.subplots(1, len(sources), squeeze=False)[0]
    for axes, source in zip(panels, sources):
        for index, run in enumerate(by_source[source]):
            points = [(e, v) for e, v in trajectory(run) if PLANE_X in v and PLANE_Y in v]
            xs, ys = [v[PLANE_X] for _, v in points], [v[PLANE_Y] for _, v in points]
            axes.plot(xs, ys, color=colours(index % 10), linewidth=1.2, alpha=0.8, zorder=1)
            axes.scatter(
                xs,
                ys,
                c=[e for e, _ in points],
                cmap=cmap,
                norm=norm,
                marker=markers[index % len(markers)],
                edgecolors=colours(index % 10),
                linewidths=1.0,
                s=40,
                zorder=2,
                label=name_of(run),
            )
            axes.annotate(
                "end",
                (xs[-1], ys[-1]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="x-small",
                color=colours(index % 10),
            )
        axes.set(xlabel=LABELS[PLANE_X], ylabel=LABELS[PLANE_Y], title=display_name(source))
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0.0, -0.18))
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(panels), label="epoch")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    figure.suptitle("Information plane (line colour: model, point colour: epoch)")
    save(figure, "information-plane", "Information plane: I(z; v) against I(z1; z2)")

    figure = Figure(figsize=(14, 3.8 * len(sources)), layout="constrained")
    grid = figure.subplots(len(sources), 2, squeeze=False)
    for row, source in zip(grid, sources):
        for axes, key in zip(row, (PLANE_X, PLANE_Y)):
            plot_over_epochs(axes, key, by_source[source])
            axes.set(xlabel="epoch", ylabel=LABELS[key], title=f"{display_name(source)}: {SHORT[key]}")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend_right(row[1])
    save(figure, "information-epochs", "I(z1; z2) and I(z; v) against epochs")

    for source in sources:
        factors = factor_names(by_source[source])
        if not factors:
            continue
        figure = Figure(figsize=(4.5 * len(factors) + 4.0, 3.8), layout="constrained")
        for axes, factor in zip(figure.subplots(1, len(factors), squeeze=False)[0], factors):
            key = f"{FACTOR_PREFIX}{factor}{FACTOR_SUFFIX}"
            plot_over_epochs(axes, key, by_source[source])
            for index, run in enumerate(by_source[source]):
                _floor_and_interval(axes, key, run, colours(index % 10))
            axes.set(xlabel="epoch", ylabel=f"I(z; {factor})  [Renyi, nats]", title=factor)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend_right(axes)
        figure.suptitle(
            f"{display_name(source)}: information the representation keeps about each factor "
            "(band: 95 % bootstrap interval; dotted: shuffled-label floor)"
        )
        save(figure, f"information-factors-{safe_name(source)}", f"I(z; factor) against epochs ({source})")
    return written


def _floor_and_interval(axes: Any, key: str, run: Run, colour: Any) -> None:
    """A run's bootstrap band and shuffled-label floor for the estimate `key`, where it recorded them."""
    band = [(e, v[f"{key}_low"], v[f"{key}_high"]) for e, v in trajectory(run) if f"{key}_low" in v]
    if band:
        epochs, lows, highs = zip(*band)
        axes.fill_between(epochs, lows, highs, color=colour, alpha=0.15, linewidth=0)
    floor = [(e, v[f"{key}_shuffled"]) for e, v in trajectory(run) if f"{key}_shuffled" in v]
    if floor:
        axes.plot([e for e, _ in floor], [f for _, f in floor], linestyle=":", linewidth=1.0, color=colour)


def _legend_right(axes: Any) -> None:
    """The runs' legend to the right of `axes`, where constrained layout keeps room for it: anchored under
    a panel, it overlapped the x labels once there were more than a few runs."""
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))


def _ambiguous(runs_: list[Run], run: Run) -> bool:
    """Two runs of the same model and source need their names to tell them apart."""
    return sum(r.model == run.model and source_key(r.config) == source_key(run.config) for r in runs_) > 1
