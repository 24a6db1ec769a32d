"""The information plane: records and PNGs from the estimates training wrote to metrics.jsonl (train.diagnostics).

Figures (one panel per source data set):
  information-plane   I(z; v) against I(z1; z2), one trajectory per run, points filled by epoch
  information-epochs  both quantities against the epoch, one line per run
  information-factors I(z; factor) against the epoch, one panel per factor (data sets that know factors)
All use the matrix-based Renyi estimates, so the two axes share one estimator and one scale. A run is
drawn in its row's colour (the model's colour in every figure of the report) with its seed's marker,
named as the tables name its row; a line joins two estimates only when no epoch lies unmeasured between
them, and x ticks sit on measured epochs (plots.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mimcli.data.transfer import display_name
from mimcli.report.collect import Run, run_fields, source_key
from mimcli.report.naming import safe_name
from mimcli.report.plots import Drawn, Style, plot_measured, runs_over_epochs, tick_values
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


def drawn_runs(runs_: list[Run], style: Style) -> dict[str, list[Run]]:
    """Per source, the runs (pooled in a table row) that recorded the plane's two estimates; an epochs-sweep
    point cut from a longer run has the same trajectory, cut short, so only the longest is kept."""
    by_source: dict[str, list[Run]] = defaultdict(list)
    for run in sorted(runs_, key=lambda r: -len(r.metrics)):
        if style.row(run) is None or not any(PLANE_X in e and PLANE_Y in e for _, e in trajectory(run)):
            continue
        kept = by_source[source_key(run.config)]
        if not any(other.metrics[: len(run.metrics)] == run.metrics for other in kept):
            kept.append(run)
    return {source: style.order(members) for source, members in by_source.items()}


def plane_figure(by_source: dict[str, list[Run]], style: Style) -> Drawn:
    """I(z; v) against I(z1; z2): a run's trajectory in its model's colour, points filled by epoch."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    last_epoch = max(p[0] for runs in by_source.values() for r in runs for p in trajectory(r))
    norm, cmap = Normalize(0, max(last_epoch, 1)), colormaps["viridis"]
    figure = Figure(figsize=(6.5 * len(by_source) + 1.5, 5))
    panels = figure.subplots(1, len(by_source), squeeze=False)[0]
    for axes, (source, members) in zip(panels, by_source.items()):
        for run in members:
            points = [(e, v) for e, v in trajectory(run) if PLANE_X in v and PLANE_Y in v]
            xs, ys = [v[PLANE_X] for _, v in points], [v[PLANE_Y] for _, v in points]
            colour, marker = style.run_colour(run), style.run_marker(run)
            plot_measured(axes, [e for e, _ in points], xs, ys, "", color=colour, linewidth=1.2, alpha=0.8, zorder=1)
            axes.scatter(
                xs,
                ys,
                c=[e for e, _ in points],
                cmap=cmap,
                norm=norm,
                marker=marker,
                edgecolors=colour,
                linewidths=1.0,
                s=40,
                zorder=2,
                label=style.run_label(run),
            )
            axes.annotate(
                "end", (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4), fontsize="x-small", color=colour
            )
        axes.set(xlabel=LABELS[PLANE_X], ylabel=LABELS[PLANE_Y], title=display_name(source))
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0.0, -0.18))
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(panels), label="epoch (point fill)")
    measured = sorted({e for runs in by_source.values() for r in runs for e, _ in trajectory(r)})
    bar.set_ticks(tick_values(measured))
    figure.suptitle("Information plane (outline and line colour: model; marker: training seed; fill: epoch)")
    return Drawn("information-plane", "Information plane: I(z; v) against I(z1; z2)", figure, tight=True)


def over_epochs(axes: Any, key: str, members: list[Run], style: Style) -> None:
    """One line per run: the estimate `key` at each epoch it was recorded; ticks on those epochs."""
    runs_over_epochs(axes, [(run, [(e, v[key]) for e, v in trajectory(run) if key in v]) for run in members], style)


def epochs_figure(by_source: dict[str, list[Run]], style: Style) -> Drawn:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 3.8 * len(by_source)), layout="constrained")
    grid = figure.subplots(len(by_source), 2, squeeze=False)
    for row, (source, members) in zip(grid, by_source.items()):
        for axes, key in zip(row, (PLANE_X, PLANE_Y)):
            over_epochs(axes, key, members, style)
            axes.set(xlabel="epoch", ylabel=LABELS[key], title=f"{display_name(source)}: {SHORT[key]}")
        _legend_right(row[1])
    figure.suptitle("Information against epochs (colour: model; marker: training seed)")
    return Drawn("information-epochs", "I(z1; z2) and I(z; v) against epochs", figure, tight=True)


def factors_figure(source: str, members: list[Run], style: Style) -> Drawn | None:
    from matplotlib.figure import Figure

    factors = factor_names(members)
    if not factors:
        return None
    figure = Figure(figsize=(4.5 * len(factors) + 4.0, 3.8), layout="constrained")
    panels = figure.subplots(1, len(factors), squeeze=False)[0]
    for axes, factor in zip(panels, factors):
        key = f"{FACTOR_PREFIX}{factor}{FACTOR_SUFFIX}"
        over_epochs(axes, key, members, style)
        for run in members:
            _floor_and_interval(axes, key, run, style.run_colour(run))
        axes.set(xlabel="epoch", ylabel=f"I(z; {factor})  [Renyi, nats]", title=factor)
    _legend_right(panels[-1])
    figure.suptitle(
        f"{display_name(source)}: information the representation keeps about each factor "
        "(colour: model; marker: training seed; band: 95 % bootstrap interval; dotted: shuffled-label floor)"
    )
    title = f"I(z; factor) against epochs ({source})"
    return Drawn(f"information-factors-{safe_name(source)}", title, figure, tight=True)


def information_figures(runs_: list[Run], style: Style) -> list[Drawn]:
    """The information figures for the runs that recorded estimates; [] when none did."""
    by_source = drawn_runs(runs_, style)
    if not by_source:
        return []
    drawn = [plane_figure(by_source, style), epochs_figure(by_source, style)]
    factors = [factors_figure(source, members, style) for source, members in by_source.items()]
    return drawn + [d for d in factors if d is not None]


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
