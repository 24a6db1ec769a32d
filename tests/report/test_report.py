"""`mim report`: tables, sweeps, comparison with the paper, records, plots and skipped runs.

One run is trained for real (tiny shapes run, `pretrain`); its variants are copies with another
config.toml written by `save_config` and a probe.json with known numbers, so every table value
below is checked against hand-computed arithmetic.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import pytest
from rich.console import Console

from mimcli.config import apply_overrides, build_config, load_config
from mimcli.errors import UsageError
from mimcli.report import run_report
from mimcli.report.collect import records
from mimcli.report.constants import MEAN
from mimcli.report.reference import load_reference
from mimcli.report.render import markdown, rich_tables, to_csv
from mimcli.report.tables import build_report
from mimcli.rundir import runs
from mimcli.train.loop import pretrain
from tests.tiny import TINY_BASE

REFERENCE_MD = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
TINY = [
    *TINY_BASE,
    "train.batch_size=32",
    "train.epochs=1",
    "regularizer.kind='rc'",
    "train.diagnostics_every=0",
]  # information records have their own tests (test_information.py)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, quiet) -> Path:
    """A real 1-epoch run (config.toml, metrics.jsonl, run.json, checkpoints), no probe.json."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    pretrain(load_config(None, TINY), run_dir, console=quiet(), show_progress=False)
    return run_dir


def linear(dataset: str, best: float, val: float | None = None, epochs: int = 100, seeds=(0,)) -> dict:
    val = best - 1 if val is None else val
    return {
        "dataset": dataset,
        "task": "classification",
        "protocol": "linear",
        "layers": [4],
        "status": "ok",
        "message": None,
        "metrics": {
            "acc_best_test": {"mean": best, "std": 0.0, "values": [best]},
            "acc_val_selected": {"mean": val, "std": 0.0, "values": [val]},
        },
        "params": {
            "epochs": epochs,
            "lr": 0.01,
            "momentum": 0.9,
            "batch_size": 128,
            "milestones": [int(epochs * 0.6), int(epochs * 0.8)],
            "gamma": 0.1,
            "selection": "best test / val-selected",
            "val_fraction": 0.1,
            "seeds": list(seeds),
        },
        "cache_key": "k",
        "n_train": 100,
        "n_test": 50,
        "seconds": 0.1,
    }


def regression(dataset: str, r2: float) -> dict:
    return {
        "dataset": dataset,
        "task": "regression",
        "protocol": "regression",
        "layers": [4],
        "status": "ok",
        "message": None,
        "metrics": {
            "r2": {"mean": r2, "std": 0.0, "values": [r2]},
            "mse": {"mean": 0.01, "std": 0.0, "values": [0.01]},
        },
        "params": {"alphas": [1.0], "selection": "ridge", "val_fraction": 0.1, "seeds": [0]},
        "cache_key": "k",
        "n_train": 100,
        "n_test": 50,
        "seconds": 0.1,
    }


def knn(dataset: str, acc: float) -> dict:
    return {
        "dataset": dataset,
        "task": "classification",
        "protocol": "knn",
        "layers": [4],
        "status": "ok",
        "message": None,
        "metrics": {"acc": {"mean": acc, "std": 0.0, "values": [acc]}},
        "params": {"k": 200, "temperature": 0.1},
        "cache_key": "k",
        "n_train": 100,
        "n_test": 50,
        "seconds": 0.1,
    }


def missing(dataset: str) -> dict:
    return {
        "dataset": dataset,
        "task": "classification",
        "protocol": "linear",
        "layers": [4],
        "status": "missing",
        "message": f"{dataset} not found",
        "metrics": {},
        "params": {},
        "cache_key": None,
        "n_train": None,
        "n_test": None,
        "seconds": 0.0,
    }


def variant(trained: Path, dest: Path, overrides: list[str], results: list[dict]) -> Path:
    """A copy of the trained run with another config and a probe.json holding `results`."""
    shutil.copytree(trained, dest, ignore=shutil.ignore_patterns(runs.PROBE))
    raw = apply_overrides(runs.load_run_config(trained).to_dict(), overrides)
    runs.save_config(dest, build_config(raw, stored=True))
    runs.write_json(
        dest / runs.PROBE,
        {
            "format": 1,
            "run": dest.name,
            "checkpoint": {"path": "backbone.pt", "sha256": runs.file_sha256(dest / runs.BACKBONE)},
            "results": results,
        },
    )
    return dest


def cifar(
    kind: str = "none",
    method: str = "simclr",
    seed: int = 0,
    lam: float = 1.0,
    epochs: int = 1,
    extra: list[str] | None = None,
) -> list[str]:
    return [
        "data.dataset='cifar10'",
        f"method.name='{method}'",
        f"regularizer.kind='{kind}'",
        f"regularizer.lambda={lam}",
        f"train.seed={seed}",
        f"train.epochs={epochs}",
        *(extra or []),
    ]


def grid(trained: Path, root: Path) -> Path:
    """CIFAR-10 runs: SimCLR (2 seeds), + RC, + LBE, BYOL, BYOL + RC; cifar10, dtd, mnist probed."""

    def probes(c10: float, dtd: float, mnist: float) -> list[dict]:
        return [linear("cifar10", c10), linear("dtd", dtd), linear("mnist", mnist)]

    variant(trained, root / "simclr-s0", cifar(seed=0), probes(85.0, 30.0, 97.0))
    variant(trained, root / "simclr-s1", cifar(seed=1), probes(86.0, 32.0, 96.0))
    variant(trained, root / "simclr-rc", cifar("rc"), probes(85.9, 35.0, 98.0))
    variant(trained, root / "simclr-lbe", cifar("lbe"), probes(84.0, 36.0, 97.5))
    variant(trained, root / "byol", cifar(method="byol"), probes(85.6, 31.0, 97.2))
    variant(trained, root / "byol-rc", cifar("rc", "byol", lam=0.1), probes(85.4, 34.0, 98.1))
    return root


def row(table, label: str):
    return next(r for r in table.rows if r.group.label == label)


# --------------------------------------------------------------------------------------------- tables


def test_accuracy_table_values_seeds_blocks_and_transfer_mean(trained, tmp_path):
    root = grid(trained, tmp_path / "runs")
    report = build_report([root])
    assert report.warnings == []
    (table,) = report.tables
    assert table.source == "cifar10"
    assert table.title == "CIFAR-10 pretraining"
    assert [c.key for c in table.columns] == ["cifar10", "dtd", "mnist", MEAN]
    assert [r.group.label for r in table.rows] == ["SimCLR", "SimCLR + RC", "SimCLR + LBE", "BYOL", "BYOL + RC"]
    simclr = row(table, "SimCLR")
    assert len(simclr.group.runs) == 2  # seeds 0 and 1 are one row
    assert simclr.cells["cifar10"].mean == pytest.approx(85.5)
    assert simclr.cells["cifar10"].std == pytest.approx(statistics.stdev([85.0, 86.0]))
    assert simclr.cells["cifar10"].text(2) == "85.50 ± 0.71"
    # transfer mean per run (dtd, mnist), then mean ± std over the seeds
    assert simclr.cells[MEAN].values == pytest.approx([63.5, 64.0])
    assert row(table, "SimCLR + LBE").cells[MEAN].text(2) == "66.75"
    # best per block: SimCLR block and BYOL block separately
    best = {(table.rows[i].group.label, key) for i, key in table.best}
    assert ("SimCLR + RC", "cifar10") in best
    assert ("SimCLR", "cifar10") not in best
    assert ("SimCLR + LBE", "dtd") in best
    assert ("SimCLR + RC", "mnist") in best
    assert ("BYOL", "cifar10") in best
    assert ("BYOL + RC", "mnist") in best
    assert ("BYOL + RC", "dtd") in best
    assert ("SimCLR + LBE", MEAN) in best
    assert ("SimCLR + RC", MEAN) not in best  # 66.75 > 66.50
    text = markdown(report, [root], None, None, tmp_path)
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert lines["SimCLR"] == "| SimCLR | 2 | 85.50 ± 0.71 | 31.00 ± 1.41 | 96.50 ± 0.71 | 63.75 ± 0.35 |"
    assert lines["SimCLR + RC"] == "| SimCLR + RC | 1 | **85.90** | 35.00 | **98.00** | 66.50 |"
    assert lines["SimCLR + LBE"] == "| SimCLR + LBE | 1 | 84.00 | **36.00** | 97.50 | **66.75** |"
    assert lines["BYOL + RC"] == "| BYOL + RC | 1 | 85.40 | **34.00** | **98.10** | **66.05** |"
    assert "mean over DTD, MNIST" in text


def test_best_per_block_bolds_ties_and_the_mean(trained, tmp_path):
    root = tmp_path / "runs"
    variant(trained, root / "a", cifar(), [linear("cifar10", 80.0), linear("dtd", 30.0)])
    variant(trained, root / "b", cifar("rc"), [linear("cifar10", 80.0), linear("dtd", 20.0)])
    (table,) = build_report([root]).tables
    assert {(table.rows[i].group.label, k) for i, k in table.best} == {
        ("SimCLR", "cifar10"),
        ("SimCLR + RC", "cifar10"),
        ("SimCLR", "dtd"),
        ("SimCLR", MEAN),
    }


def test_metric_choice_knn_and_regression_columns(trained, tmp_path):
    root = tmp_path / "runs"
    results = [
        linear("shapes:shape", 90.0, val=88.0),
        linear("shapes:hue", 40.0, val=39.0),
        regression("shapes:position", 0.8766),
        knn("cifar10", 55.5),
        knn("mnist", 70.0),
    ]
    variant(trained, root / "shapes-run", ["regularizer.kind='none'"], results)
    (table,) = build_report([root]).tables
    assert table.source == "shapes"
    assert [(c.key, c.role) for c in table.columns] == [
        ("shapes:shape", "source"),
        ("shapes:hue", "source"),
        ("shapes:position", "source"),
        ("cifar10", "transfer"),
        ("mnist", "transfer"),
        (MEAN, "mean"),
    ]
    cells = table.rows[0].cells
    assert cells["shapes:position"].text(3) == "0.877"
    assert table.column("shapes:position").header.endswith("(R²)")
    assert cells["cifar10"].mean == 55.5
    assert cells[MEAN].mean == pytest.approx((55.5 + 70.0) / 2)
    (honest,) = build_report([root], metric="acc_val_selected").tables
    assert honest.rows[0].cells["shapes:shape"].mean == 88.0
    assert honest.rows[0].cells["cifar10"].mean == 55.5
    with pytest.raises(UsageError, match="--metric 'acc'"):
        build_report([root], metric="acc")


def test_lambda_in_labels_and_lambda_table(trained, tmp_path):
    root = tmp_path / "runs"
    variant(trained, root / "base", cifar(), [linear("cifar10", 80.0), linear("dtd", 30.0)])
    for lam, (c10, dtd) in {0.1: (80.5, 32.0), 1.0: (81.0, 34.0), 10.0: (79.0, 31.0)}.items():
        variant(
            trained, root / "sweep" / f"rc-{lam}", cifar("rc", lam=lam), [linear("cifar10", c10), linear("dtd", dtd)]
        )
    report = build_report([root])
    (table,) = report.tables
    assert [r.group.label for r in table.rows] == [
        "SimCLR",
        "SimCLR + RC (λ=0.1)",
        "SimCLR + RC (λ=1)",
        "SimCLR + RC (λ=10)",
    ]
    (sweep,) = report.sweeps
    assert sweep.symbol == "λ"
    assert [b.group.label for b in sweep.baselines] == ["SimCLR"]
    (series,) = sweep.series
    assert series.label == "SimCLR + RC"
    assert [(p.x, p.row.cells["cifar10"].mean, p.row.cells[MEAN].mean) for p in series.points] == [
        (0.1, 80.5, 32.0),
        (1.0, 81.0, 34.0),
        (10.0, 79.0, 31.0),
    ]
    text = markdown(report, [root], None, None, tmp_path)
    assert "## Accuracy against λ: CIFAR-10 pretraining" in text
    assert "| SimCLR + RC | 0.1 | 80.50 | 32.00 | 1 |" in text
    assert "| baseline: SimCLR | - | 80.00 | 30.00 | 1 |" in text


def test_epochs_table(trained, tmp_path):
    root = tmp_path / "runs"
    for method, kind, values in (("simclr", "none", (80.0, 78.0, 75.0)), ("simclr", "rc", (80.0, 80.5, 81.0))):
        for epochs, dtd in zip((100, 200, 400), values):
            variant(
                trained,
                root / f"{kind}-{epochs}",
                cifar(kind, method, epochs=epochs),
                [linear("cifar10", 85.0), linear("dtd", dtd)],
            )
    report = build_report([root])
    assert [r.group.label for r in report.tables[0].rows][:3] == [
        "SimCLR (100 ep)",
        "SimCLR (200 ep)",
        "SimCLR (400 ep)",
    ]
    (sweep,) = report.sweeps
    assert sweep.symbol == "epochs"
    assert [s.label for s in sweep.series] == ["SimCLR", "SimCLR + RC"]
    assert [(p.x, p.row.cells[MEAN].mean) for p in sweep.series[0].points] == [(100, 80.0), (200, 78.0), (400, 75.0)]
    assert "| SimCLR + RC | 400 | 85.00 | 81.00 | 1 |" in markdown(report, [root], None, None, tmp_path)


def test_random_init_row_is_named_so_and_every_trained_row_is_differenced_against_it(trained, tmp_path):
    root = tmp_path / "runs"
    for seed, (init, simclr) in enumerate([(40.0, 85.0), (41.0, 86.0), (42.0, 87.0)]):
        variant(trained, root / f"random-init-seed-{seed}", cifar(seed=seed, epochs=0), [linear("cifar10", init)])
        variant(trained, root / f"simclr-{seed}", cifar(seed=seed), [linear("cifar10", simclr)])
    variant(trained, root / "simclr-rc", cifar("rc"), [linear("cifar10", 90.0)])
    (table,) = build_report([root]).tables
    # the untrained row is the baseline of the block and adds no "(1 ep)" to the trained rows' labels
    assert [r.group.label for r in table.rows] == ["random init", "SimCLR", "SimCLR + RC"]
    # SimCLR - random init: +45 with both variances 1, n 3 each: df 4, half-width t_0.975(4) sqrt(2/3) =
    # 2.776445 * 0.816497 = 2.2669 (NIST table 1.3.6.7.2); + RC has one seed: no interval
    assert table.spread[1:] == [
        "SimCLR + RC - SimCLR (n 1 vs 3; 95% Welch t-interval over training seeds): "
        "CIFAR-10 +4.00 (no interval: n = 1).",
        "SimCLR - random init (n 3 vs 3; 95% Welch t-interval over training seeds): CIFAR-10 +45.00 [+42.73, +47.27].",
        "SimCLR + RC - random init (n 1 vs 3; 95% Welch t-interval over training seeds): "
        "CIFAR-10 +49.00 (no interval: n = 1).",
    ]
    # two untrained models in one table say which model each is
    variant(trained, root / "byol-init", cifar(method="byol", epochs=0), [linear("cifar10", 30.0)])
    (table,) = build_report([root]).tables
    labels = [r.group.label for r in table.rows]
    assert "random init (SimCLR)" in labels
    assert "random init (BYOL)" in labels


# --------------------------------------------------------------------------------------------- compare


def test_compare_with_the_paper_and_the_report(trained, tmp_path, quiet):
    root = grid(trained, tmp_path / "runs")
    report = build_report([root], compare="paper")
    table = report.tables[0]
    simclr = row(table, "SimCLR")
    assert simclr.cells["cifar10"].reference == 85.76
    assert simclr.cells["cifar10"].difference == pytest.approx(85.5 - 85.76)
    assert simclr.cells[MEAN].reference == pytest.approx((29.52 + 97.03) / 2)
    assert row(table, "BYOL + RC").cells["dtd"].reference == 34.73
    text = markdown(report, [root], None, None, tmp_path)
    assert "| model | n | CIFAR-10 | paper | Δ | DTD | paper | Δ |" in text
    assert "| SimCLR + RC | 1 | **85.90** | 85.78 | +0.12 | 35.00 | 33.67 | +1.33 |" in text
    assert "200 epochs" in text
    rows = records(report.runs, "acc_best_test", report.reference)
    lbe = next(r for r in rows if r["model"] == "SimCLR + LBE" and r["dataset"] == "mnist")
    assert lbe["reference"] == 97.94
    assert lbe["difference"] == pytest.approx(97.5 - 97.94)

    report = build_report([root], compare="report")
    table = report.tables[0]
    assert row(table, "SimCLR + RC").cells["cifar10"].reference == 77.31
    assert row(table, "SimCLR").cells["dtd"].reference is None
    assert row(table, "BYOL").cells["cifar10"].reference is None
    with pytest.raises(UsageError, match="--compare 'papers'"):
        run_report([root], compare="papers", console=quiet(), err_console=quiet())


def parse_reference_md(text: str) -> dict[str, dict[str, dict[str, float]]]:
    """docs/reference.md's result tables: {source: {paper model label: {paper column: value}}}; the source is
    a table's first data column ("report" for the student report's table)."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    header = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells and cells[0].startswith("model"):
            header = ["report" if cells[0] == "model (report)" else cells[1], *cells[1:]]
        elif cells and header and not set(cells[0]) <= set("-: ") and re.fullmatch(r"[\d.]+", cells[1]):
            found.setdefault(header[0], {})[cells[0]] = dict(zip(header[1:], map(float, cells[1:])))
        elif not cells:
            header = None
    return found


def test_reference_json_matches_docs_reference():
    parsed = parse_reference_md(REFERENCE_MD.read_text())
    data = json.loads((Path(__import__("mimcli").__file__).parent / "reference" / "paper.json").read_text())
    datasets, models = data["dataset_names"], data["model_names"]

    def ours(name: str) -> str:
        for paper, label in models.items():
            if name == paper or name.startswith(paper + " + "):
                return label + name[len(paper) :]
        return name

    checked = 0
    for source, table in parsed.items():
        reference = load_reference("report" if source == "report" else "paper")["sources"]
        for model, values in table.items():
            for column, value in values.items():
                src = "cifar10" if source == "report" else datasets[source]
                assert reference[src][ours(model)][datasets[column]] == value, (source, model, column)
                checked += 1
    # 2 x 9 x 7 (Table 1) + 3 x 7 (analysis) + 6 x 7 (supervised) + 3 (report): every number transcribed
    assert checked == 126 + 21 + 42 + 3
    paper = load_reference("paper")["sources"]
    assert sum(len(v) for rows in paper.values() for v in rows.values()) == 126 + 21 + 42
    assert paper["stl10"]["Barlow Twins + RC"]["stl10"] == 82.21
    assert paper["cifar10"]["SimCLR + noise"]["gtsrb"] == 92.41


# --------------------------------------------------------------------------------------------- outputs


def test_json_and_csv_records(trained, tmp_path, quiet):
    root = grid(trained, tmp_path / "runs")
    console = quiet()
    run_report([root], fmt="json", console=console, err_console=quiet())
    rows = json.loads(console.file.getvalue())
    assert len(rows) == 6 * 3
    first = next(r for r in rows if r["run"].endswith("byol-rc") and r["dataset"] == "dtd")
    assert first == {
        "run": first["run"],
        "model": "BYOL + RC",
        "method": "byol",
        "regularizer": "rc",
        "lambda": 0.1,
        "epochs": 1,
        "seed": 0,
        "dataset": "dtd",
        "task": "classification",
        "metric": "acc_best_test",
        "value": 34.0,
        "protocol": "linear",
        "layers": [4],
        "features": "raw",  # a record without params.features is the paper's raw probe
    }
    plain = next(r for r in rows if r["run"].endswith("simclr-s1") and r["dataset"] == "cifar10")
    assert plain["lambda"] is None
    assert plain["seed"] == 1
    assert plain["value"] == 86.0

    out = tmp_path / "records.csv"
    run_report([root], fmt="csv", out=out, metric="acc_val_selected", console=quiet(), err_console=quiet())
    parsed = list(csv.DictReader(out.open()))
    assert len(parsed) == 18
    assert list(parsed[0]) == list(first)
    lbe = next(r for r in parsed if r["run"].endswith("simclr-lbe") and r["dataset"] == "cifar10")
    assert lbe["metric"] == "acc_val_selected"
    assert float(lbe["value"]) == 83.0
    assert lbe["lambda"] == "1.0"
    assert to_csv([]).strip() == ",".join(first)


def test_terminal_table_and_markdown_document(trained, tmp_path, quiet):
    root = grid(trained, tmp_path / "runs")
    console = quiet()
    run_report([root], console=console, err_console=quiet())
    text = console.file.getvalue()
    assert "CIFAR-10 pretraining" in text
    assert "85.50 ± 0.71" in text
    assert "SimCLR + LBE" in text
    assert "protocol" in text
    assert "resnet18, width 8" in text

    out = tmp_path / "report" / "report.md"
    run_report(
        [root], fmt="markdown", out=out, plots=tmp_path / "report" / "plots", console=quiet(), err_console=quiet()
    )
    document = out.read_text()
    assert document.startswith("# Linear-probe report")
    for expected in (
        "## Protocol",
        "**backbone**: resnet18, width 8, stem auto",
        "**epochs**: 1",
        "**batch size**: 32",
        "**training seeds**: 0, 1",
        "epochs 100, lr 0.01, momentum 0.9",
        "batch_size 128",
        "probe seeds [0]",
        "**linear selection**: best test / val-selected",
        "## CIFAR-10 pretraining",
        "![Linear probe per model: CIFAR-10 pretraining](plots/accuracy-cifar10.png)",
    ):
        assert expected in document, expected
    for link in re.findall(r"\]\(([^)]+\.png)\)", document):
        assert (out.parent / link).is_file(), link


def test_plots_are_pdf_and_png_at_200_dpi_with_one_loss_figure_per_folder(trained, tmp_path, quiet):
    image = pytest.importorskip("matplotlib.image")
    from PIL import Image

    from mimcli.report.plots import axis_label, chance

    root = tmp_path / "runs"
    for lam in (0.1, 1.0):
        variant(
            trained,
            root / "lambda" / f"rc-{lam}",
            cifar("rc", lam=lam),
            [linear("cifar10", 80 + lam), linear("dtd", 30.0)],
        )
    for epochs in (1, 2):
        variant(
            trained,
            root / "epochs" / f"ep-{epochs}",
            cifar(epochs=epochs, extra=["train.batch_size=64"]),
            [linear("cifar10", 80.0), linear("dtd", 30.0 + epochs)],
        )
    plots = tmp_path / "plots"
    report = run_report([root], plots=plots, console=quiet(), err_console=quiet())
    names = sorted(p.name for p in plots.iterdir())
    assert len(report.runs) == 4
    figures = ["accuracy-cifar10", "epochs-cifar10", "lambda-cifar10", "loss-epochs", "loss-lambda"]
    assert names == sorted([f"{f}.pdf" for f in figures] + [f"{f}.png" for f in figures])
    for name in figures:
        png = plots / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (plots / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
        assert Image.open(png).info["dpi"][0] == pytest.approx(200, abs=1)
        pixels = image.imread(png)
        assert pixels.ndim == 3
        assert pixels.shape[0] > 400
        assert pixels.shape[1] > 400
    table = report.tables[0]
    assert chance(table.column("cifar10")) == 10.0
    assert chance(table.column("dtd")) == pytest.approx(100 / 47)
    assert axis_label(table.column("cifar10"), "acc_best_test") == "linear accuracy (%)"
    assert chance(table.column(MEAN)) is None


def test_without_matplotlib_tables_and_a_note(trained, tmp_path, monkeypatch, quiet):
    root = tmp_path / "runs"
    variant(trained, root / "a", cifar(), [linear("cifar10", 80.0)])
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    console, err = quiet(), quiet()
    run_report([root], plots=tmp_path / "plots", console=console, err_console=err)
    assert "80.00" in console.file.getvalue()
    assert "pip install 'matplotlib>=3.8'" in err.file.getvalue()
    assert not (tmp_path / "plots").exists()


# --------------------------------------------------------------------------------------------- bad input


def test_malformed_and_unfinished_runs_are_skipped_with_a_warning(trained, tmp_path, quiet):
    root = tmp_path / "runs"
    variant(trained, root / "good", cifar(), [linear("cifar10", 80.0), missing("dtd")])
    bad_config = variant(trained, root / "bad-config", cifar(), [linear("cifar10", 1.0)])
    (bad_config / runs.CONFIG).write_text("[train\nepochs = ")
    running = variant(trained, root / "running", cifar(), [linear("cifar10", 2.0)])
    runs.write_json(running / runs.STATUS, {"status": "running", "epochs_done": 0})
    unprobed = variant(trained, root / "unprobed", cifar(), [])
    (unprobed / runs.PROBE).unlink()
    torn = variant(trained, root / "torn", cifar(), [linear("cifar10", 3.0)])
    (torn / runs.PROBE).write_text((torn / runs.PROBE).read_text()[:40])
    retrained = variant(trained, root / "retrained", cifar(), [linear("cifar10", 4.0)])
    backbone = retrained / runs.BACKBONE
    backbone.write_bytes(backbone.read_bytes() + b"x")
    (root / "notes").mkdir()

    err = quiet()
    report = run_report([root], console=quiet(), err_console=err)
    assert [r.path.name for r in report.runs] == ["good"]
    assert report.tables[0].rows[0].cells["cifar10"].values == [80.0]
    warnings = err.file.getvalue()
    for name, reason in (
        ("bad-config", "unreadable config.toml"),
        ("running", "unfinished (running, 0 of 1 epochs)"),
        ("unprobed", "no probe results"),
        ("torn", "unreadable probe.json"),
        ("retrained", "probe.json is stale"),
    ):
        assert re.search(rf"skipped \S*{name}: {re.escape(reason)}", warnings), (name, warnings)
    assert re.search(r"good: no probe result for dtd \(missing\)", warnings)

    with pytest.raises(UsageError, match="no finished run with probe results"):
        run_report([root / "torn"], console=quiet(), err_console=quiet())
    with pytest.raises(UsageError, match="no run directories"):
        run_report([root / "notes"], console=quiet(), err_console=quiet())
    with pytest.raises(UsageError, match="no such file"):
        run_report([root / "nowhere"], console=quiet(), err_console=quiet())
    with pytest.raises(UsageError, match="--format 'html'"):
        run_report([root], fmt="html", console=quiet(), err_console=quiet())


def test_mixed_protocols_are_flagged(trained, tmp_path):
    root = tmp_path / "runs"
    variant(trained, root / "a", cifar(), [linear("cifar10", 80.0), linear("dtd", 30.0)])
    variant(trained, root / "b", cifar("rc"), [linear("cifar10", 81.0), linear("dtd", 31.0)])
    variant(
        trained,
        root / "c",
        cifar("lbe", extra=["model.width=16"]),
        [linear("cifar10", 82.0), linear("dtd", 32.0, epochs=10)],
    )
    report = build_report([root])
    table = report.tables[0]
    assert [r.label for r in table.rows] == ["SimCLR", "SimCLR + RC", "SimCLR + LBE†"]
    lbe = row(table, "SimCLR + LBE")
    assert lbe.cells["dtd"].flagged
    assert lbe.cells[MEAN].flagged
    assert not lbe.cells["cifar10"].flagged
    assert lbe.cells["dtd"].text(2) == "32.00†"
    assert any("different protocols" in w and "model.width: 8 (2 rows), 16 (1 row)" in w for w in report.warnings)
    assert any(
        "column DTD mixes probe protocols" in w and "epochs: 100 (2 runs), 10 (1 run)" in w for w in report.warnings
    )
    text = markdown(report, [root], None, None, tmp_path)
    assert "| SimCLR + LBE† | 1 | **82.00** | **32.00†** |" in text
    assert "## Warnings" in text


def test_real_probe_results_feed_the_report(trained, tmp_path, quiet):
    probe = pytest.importorskip("mimcli.probe")
    run_dir = tmp_path / "runs" / "probed"
    shutil.copytree(trained, run_dir)
    probe.run_probes(
        run_dir,
        datasets=["shapes:shape", "shapes:position"],
        protocol="linear",
        layers=[4],
        seeds=[0],
        data_root=str(tmp_path / "data"),
        device="cpu",
        console=quiet(),
    )
    written = json.loads((run_dir / runs.PROBE).read_text())["results"]
    (table,) = build_report([tmp_path / "runs"]).tables
    cells = table.rows[0].cells
    assert table.rows[0].group.label == "SimCLR + RC"
    assert cells["shapes:shape"].mean == written[0]["metrics"]["acc_best_test"]["mean"]
    assert cells["shapes:position"].mean == written[1]["metrics"]["r2"]["mean"]


# --------------------------------------------------------------------------------------------- readability


def rendered(report, width: int, plain: bool = True) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    for table in rich_tables(report, plain=plain, width=width):
        console.print(table)
    return console.export_text()


def wide_grid(trained: Path, root: Path) -> Path:
    """CIFAR-10 runs probed on all seven data sets of the paper's Table 1, with long row labels."""
    names = ["cifar10", "dtd", "mnist", "fashionmnist", "cub200", "flowers102", "gtsrb"]
    for lam, seed, base in ((0.1, 0, 80.0), (0.1, 1, 81.0), (1.0, 0, 79.0)):
        variant(
            trained,
            root / f"lbe-{lam}-{seed}",
            cifar("lbe", lam=lam, seed=seed),
            [linear(n, base + i) for i, n in enumerate(names)],
        )
    return root


@pytest.mark.parametrize("width", [60, 80, 120])
def test_tables_stay_readable_at_60_80_and_120_columns(trained, tmp_path, width):
    report = build_report([wide_grid(trained, tmp_path / "runs")], compare="paper")
    text = rendered(report, width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for expected in (
        "SimCLR + LBE (λ=0.1)",
        "SimCLR + LBE (λ=1)",
        "80.50 ± 0.71",
        "86.50 ± 0.71*",
        "GTSRB",
        "Flowers-102",
        "CUB-200-2011",
        "transfer mean",
        "CIFAR-10",
        "Fashion-MNIST",
    ):
        assert expected in text, (width, expected)
    parts = re.findall(r"CIFAR-10 pretraining \((\d)/(\d)\)", text)
    if width <= 80:
        assert len(parts) >= 2  # stacked, each part with the model column
    rows = [line for line in text.splitlines() if line.startswith("│")]  # table rows, not the captions
    assert sum("SimCLR + LBE (λ=1)" in line for line in rows) == max(len(parts), 1)


def test_best_cell_is_marked_in_plain_text_and_bold_in_markdown(trained, tmp_path):
    report = build_report([grid(trained, tmp_path / "runs")])
    text = rendered(report, 120)
    assert "85.90*" in text
    assert "85.50 ± 0.71*" not in text
    assert "marked *" in text
    assert "in green" not in rendered(report, 120, plain=True)
    assert "| SimCLR + RC | 1 | **85.90** |" in markdown(report, [tmp_path], None, None, tmp_path)


def test_compare_without_reference_numbers_says_so_and_drops_the_columns(trained, tmp_path):
    root = tmp_path / "runs"
    variant(trained, root / "a", ["data.dataset='shapes'"], [linear("shapes:shape", 50.0), linear("shapes:hue", 40.0)])
    report = build_report([root], compare="paper")
    text = " ".join(rendered(report, 120).split())
    assert "No paper (Wang et al., CVPR 2022), 200 epochs numbers exist for shapes pretraining" in text
    assert "Under each value" not in text
    document = markdown(report, [root], None, None, tmp_path)
    assert "| model | n | shapes:shape | shapes:hue |" in document
    assert "| - |" not in document


def test_compare_labels_the_reference_and_its_length(trained, tmp_path):
    root = grid(trained, tmp_path / "runs")
    report = build_report([root], compare="paper")
    text = " ".join(rendered(report, 200).split())
    assert "Under each value: the paper (Wang et al., CVPR 2022), 200 epochs number" in text
    assert "Our runs trained 1 epochs, the reference 200." in text
    report = build_report([root], compare="report")
    assert "30 epochs" in " ".join(rendered(report, 200).split())


def test_runs_with_the_same_seed_are_counted_once_and_flagged(trained, tmp_path):
    root = tmp_path / "runs"
    variant(trained, root / "a", cifar(seed=0), [linear("cifar10", 80.0)])
    variant(trained, root / "b", cifar(seed=0), [linear("cifar10", 80.0)])
    variant(trained, root / "c", cifar(seed=1), [linear("cifar10", 82.0)])
    report = build_report([root])
    (simclr,) = report.tables[0].rows
    assert [r.path.name for r in simclr.group.runs] == ["a", "c"]
    assert simclr.cells["cifar10"].text(2) == "81.00 ± 1.41"
    assert any("runs/b repeats" in w and "runs/a (same config" in w and "train.seed=0" in w for w in report.warnings)


def strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_when_a_probe_gave_nan_and_symlinked_runs_are_found(trained, tmp_path, quiet):
    """A diverged probe's NaN is null (strict parsers reject a bare NaN); a runs folder made of symbolic
    links to runs kept elsewhere is reported, and a link back up the tree ends the walk instead of looping."""
    elsewhere = variant(trained, tmp_path / "disk2" / "nan-run", cifar(), [linear("cifar10", float("nan"))])
    variant(trained, tmp_path / "disk2" / "good-run", cifar(seed=1), [linear("cifar10", 80.0)])
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "runs" / "b").symlink_to(tmp_path / "disk2" / "good-run", target_is_directory=True)
    (tmp_path / "runs" / "loop").symlink_to(tmp_path / "runs", target_is_directory=True)
    out = tmp_path / "report.json"
    run_report([tmp_path / "runs"], "json", out, console=quiet(), err_console=quiet())
    rows = strict_json(out.read_text())
    assert isinstance(rows, list)
    by_run = {row["run"]: row for row in rows}
    assert sorted(by_run) == [str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b")], by_run  # named by the links
    values = sorted((row["value"] for row in rows), key=lambda v: v is None)
    assert values == [80.0, None], rows


def test_report_out_replaces_its_own_report_and_a_user_file_only_with_force(trained, tmp_path, quiet):
    variant(trained, tmp_path / "runs" / "run", cifar(), [linear("cifar10", 80.0)])
    for fmt, name in (("markdown", "r.md"), ("json", "r.json"), ("csv", "r.csv"), ("table", "r.txt")):
        out = tmp_path / name
        for _ in range(2):  # the second run replaces the first run's report
            run_report([tmp_path / "runs"], fmt, out, console=quiet(), err_console=quiet())
        first = out.read_text()
        out.write_text("my own notes\n")
        with pytest.raises(UsageError, match=f"exists and is not a {fmt} report mim wrote"):
            run_report([tmp_path / "runs"], fmt, out, console=quiet(), err_console=quiet())
        assert out.read_text() == "my own notes\n"
        run_report([tmp_path / "runs"], fmt, out, console=quiet(), err_console=quiet(), force=True)
        assert out.read_text() == first
