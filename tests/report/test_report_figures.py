"""The report's figures say what they show: one colour per model in every figure, error bars that are the
95 % t-interval of the mean (hand-computed here), ticks and lines only at measured epochs, labels taken
from the tables.

Runs are built in memory (a config, probe records with known values, metrics.jsonl lines) and assembled
into a report without training, so each figure's artists can be read back and compared with arithmetic.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest

from mimcli.config import load_config
from mimcli.report.collect import Run
from mimcli.report.figures import report_figures
from mimcli.report.plots import INTERVAL, Drawn, Style, epoch_ticks, segments
from mimcli.report.stats import mean_half_width
from mimcli.report.tables import Report, assemble
from mimcli.rundir.runs import INFO_KEY as KEY

pytest.importorskip("matplotlib")
from matplotlib.container import BarContainer

SHAPES = ["model.width=8", "data.dataset=shapes", "probe.datasets=['shapes:shape']"]
SHAPE = {0: 40.0, 1: 46.0, 2: 49.0}  # shape accuracy per seed of the trained SimCLR row


def record(dataset: str, value: float) -> dict[str, Any]:
    """A linear-probe record carrying `value` as both metrics."""
    metrics = {m: {"mean": value, "std": 0.0, "values": [value]} for m in ("acc_best_test", "acc_val_selected")}
    params = {"epochs": 100, "lr": 0.01, "seeds": [0]}
    return {"dataset": dataset, "task": "classification", "protocol": "linear", "layers": [4], "status": "ok"} | {
        "metrics": metrics,
        "params": params,
    }


def estimates(epoch: int, seed: int) -> dict[str, Any]:
    """Information estimates of one metrics.jsonl line (values only need to differ)."""
    base = 0.1 * epoch + 0.01 * seed
    return {KEY: {"z1_z2_renyi": base, "z_v_renyi": 2 * base, "z_shape_renyi": base / 2}}


def run(folder: str, regularizer: str, seed: int, epochs: int, shape: float, logged: tuple[int, ...] = ()) -> Run:
    """A finished run in memory: loss (and estimates) logged at the epochs in `logged`."""
    config = load_config(
        None, [*SHAPES, f"regularizer.kind='{regularizer}'", f"train.seed={seed}", f"train.epochs={epochs}"]
    )
    metrics = [{"epoch": e, "loss": 5.0 - e - 0.1 * seed} | estimates(e, seed) for e in logged]
    name = f"{regularizer}-{seed}-{epochs}"
    return Run(Path("/runs") / folder / name, name, config, [record("shapes:shape", shape)], metrics)


def report(runs: list[Run]) -> Report:
    return assemble(runs, "acc_best_test", [])


def figure(drawn: list[Drawn], name: str) -> Any:
    return next(d.figure for d in drawn if d.name == name)


def legend_texts(fig: Any) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


@pytest.fixture(scope="module")
def study() -> tuple[Report, list[Drawn]]:
    """SimCLR and SimCLR + RC at 3 seeds, trained 3 epochs (loss every epoch, estimates every other), and
    SimCLR at 0 epochs (random init): an epochs sweep with two points, 0 and 3."""
    runs = [run("simclr", "none", s, 3, SHAPE[s], (1, 2, 3)) for s in SHAPE]
    runs += [run("rc", "rc", s, 3, 50.0 + s, (1, 3)) for s in SHAPE]
    runs += [run("init", "none", s, 0, 20.0 + s) for s in SHAPE]
    rep = report(runs)
    return rep, report_figures(rep)


def test_interval_half_width_is_the_t_interval_by_hand():
    # values 40, 46, 49: mean 45, sample variance (25 + 1 + 16) / 2 = 21; t_0.975(2) = 4.302653
    assert mean_half_width(list(SHAPE.values())) == pytest.approx(4.302653 * math.sqrt(21 / 3), abs=1e-5)
    assert mean_half_width([3.0]) is None


def test_bar_error_bars_are_the_95_percent_interval_of_the_mean(study):
    rep, drawn = study
    table = rep.tables[0]
    trained = next(
        i for i, row in enumerate(table.rows) if row.group.config.train.epochs == 3 and "RC" not in row.label
    )
    axes = figure(drawn, "accuracy-shapes").axes[0]
    bars = [c for c in axes.containers if isinstance(c, BarContainer)][trained]
    ((_, low), (_, high)) = bars.errorbar.lines[2][0].get_segments()[0]
    half = 4.302653 * math.sqrt(21 / 3)
    assert (low, high) == (pytest.approx(45.0 - half, abs=1e-4), pytest.approx(45.0 + half, abs=1e-4))


def test_every_figure_with_error_bars_says_what_they_are(study):
    _, drawn = study
    for name in ("accuracy-shapes", "epochs-shapes"):
        assert INTERVAL in legend_texts(figure(drawn, name)), name


def test_each_seed_is_a_dot_on_its_bar(study):
    _, drawn = study
    axes = figure(drawn, "accuracy-shapes").axes[0]
    dots = sorted(float(y) for line in axes.get_lines() for y in line.get_ydata() if float(y) in SHAPE.values())
    assert dots == sorted(SHAPE.values())


def test_a_model_has_one_colour_in_every_figure(study):
    rep, drawn = study
    # the trained SimCLR row: a bar, three loss curves, the full colour of the epochs sweep's SimCLR series,
    # three information-plane trajectories
    rows = rep.tables[0].rows
    label = next(row.label for row in rows if row.group.config.train.epochs == 3 and "RC" not in row.label)
    accuracy = figure(drawn, "accuracy-shapes")
    patch = dict(zip(legend_texts(accuracy), accuracy.legends[0].legend_handles))[label]
    loss = figure(drawn, "loss-simclr").axes[0]
    curves = [line for line in loss.get_lines() if line.get_label().startswith(f"{label}, seed")]
    sweep = figure(drawn, "epochs-shapes").axes[0]
    series = next(line for line in sweep.get_lines() if line.get_label() == "SimCLR")
    plane = figure(drawn, "information-plane").axes[0]
    edges = [c.get_edgecolor()[0] for c in plane.collections if c.get_label().startswith(f"{label}, seed")]
    assert len(curves) == 3
    assert len(edges) == 3
    colours = {tuple(patch.get_facecolor())} | {tuple(map(float, line.get_color())) for line in curves}
    colours |= {tuple(map(float, series.get_color()))} | {tuple(map(float, e)) for e in edges}
    assert colours == {tuple(patch.get_facecolor())}


def test_a_row_named_apart_from_its_model_gets_its_own_colour(study):
    """The random-init row, which the report names "random init", is a model of its own in the figures, not a
    pale shade of the method it started from."""
    rep, _ = study
    init = next(row for row in rep.tables[0].rows if row.group.config.train.epochs == 0)
    trained = next(row for row in rep.tables[0].rows if row.group.model == init.group.model and row is not init)
    style = Style(rep)
    assert init.label == "random init"
    assert style.colour(init.label) != style.colour(trained.label)
    assert style.colour(init.label) == style.family_colours["random init"]


def test_two_models_have_two_colours_and_seeds_two_markers(study):
    _, drawn = study
    plane = figure(drawn, "information-plane").axes[0]
    edges = {c.get_label(): tuple(c.get_edgecolor()[0]) for c in plane.collections if c.get_label()}
    assert len({colour for label, colour in edges.items() if "seed" in label}) == 2
    loss = figure(drawn, "loss-simclr").axes[0]
    markers = {line.get_label(): line.get_marker() for line in loss.get_lines() if "seed" in line.get_label()}
    assert len(set(markers.values())) == 3


def test_epoch_axes_tick_only_measured_epochs(study):
    _, drawn = study
    assert list(figure(drawn, "epochs-shapes").axes[0].get_xticks()) == [0, 3]
    assert list(figure(drawn, "loss-simclr").axes[0].get_xticks()) == [1, 2, 3]
    assert list(figure(drawn, "loss-rc").axes[0].get_xticks()) == [1, 3]
    assert list(figure(drawn, "information-epochs").axes[0].get_xticks()) == [1, 2, 3]


def drawn_gaps(axes: Any) -> list[float]:
    """The largest step between neighbouring points of every line drawn in data coordinates."""
    gaps = []
    for line in axes.get_lines():
        xs = [float(x) for x in line.get_xdata()]
        if line.get_linestyle() not in ("None", "") and line.get_transform() == axes.transData and len(xs) > 1:
            gaps.append(max(b - a for a, b in itertools.pairwise(xs)))
    return gaps


def test_no_line_crosses_an_unmeasured_epoch(study):
    _, drawn = study
    sweep = figure(drawn, "epochs-shapes").axes[0]  # points at 0 and 3 epochs: no line between them
    assert drawn_gaps(sweep) == []
    assert drawn_gaps(figure(drawn, "loss-rc").axes[0]) == []  # logged at epochs 1 and 3
    assert drawn_gaps(figure(drawn, "loss-simclr").axes[0]) == [1.0, 1.0, 1.0]  # every epoch: joined


def test_segments_and_ticks_helpers():
    assert segments([0, 1, 2, 4, 6, 7]) == [[0, 1, 2], [3], [4, 5]]
    from matplotlib.figure import Figure

    axes = Figure().add_subplot()
    epoch_ticks(axes, range(1, 101), most=10)
    ticks = [int(t) for t in axes.get_xticks()]
    assert ticks[0] == 1
    assert ticks[-1] == 100
    assert len(ticks) == 10
    assert set(ticks) <= set(range(1, 101))


def test_figures_name_models_as_the_tables_do(study):
    """Legends take the row labels (mimcli.report.naming via groups), so a renamed row renames its figures."""
    rep, drawn = study
    labels = [row.label for row in rep.tables[0].rows]
    assert [t for t in legend_texts(figure(drawn, "accuracy-shapes")) if t in labels] == labels
    plane = figure(drawn, "information-plane").axes[0]
    named = [c.get_label() for c in plane.collections if c.get_label()]
    assert named
    assert all(name.rpartition(", seed")[0] in labels for name in named)


def test_information_plane_title_says_what_colour_means(study):
    _, drawn = study
    title = figure(drawn, "information-plane").get_suptitle()
    assert "colour: model" in title
    assert "marker: training seed" in title
    assert "fill: epoch" in title
