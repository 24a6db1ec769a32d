"""The data set registry: one record per data set, and every reader (validation, probe normalisation,
download notes, the report's columns and the plots' chance lines) takes what it knows from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mimcli.config import apply_overrides, build_config, load_config
from mimcli.config import datasets as registry
from mimcli.config.datasets import DataSetRecord, dataset_records, register_dataset
from mimcli.data.transfer import pending_downloads
from mimcli.probe.normalization import probe_normalization
from mimcli.report.figures import write_plots
from mimcli.report.render import markdown
from mimcli.report.tables import build_report
from mimcli.rundir import runs
from mimcli.train.loop import pretrain
from tests.tiny import TINY_KEYS

SVHN = DataSetRecord(
    "svhn",
    "SVHN",
    "classification",
    classes=25,  # not SVHN's 10: a chance level (4 %) no built-in set has
    statistics=((0.4, 0.5, 0.6), (0.2, 0.3, 0.4)),
    pretrain=True,
    download=("svhn", 7),
)


@pytest.fixture
def svhn():
    """SVHN registered for one test; the registry is put back as it was afterwards."""
    saved = dict(dataset_records())
    register_dataset(SVHN)
    yield SVHN
    registry.DATASETS.clear()
    registry.DATASETS.update(saved)


def test_the_built_in_records_in_the_papers_column_order():
    assert list(dataset_records()) == [
        "cifar10",
        "cifar100",
        "stl10",
        "dtd",
        "mnist",
        "fashionmnist",
        "cub200",
        "flowers102",
        "gtsrb",
        "shapes:shape",
        "shapes:hue",
        "shapes:position",
    ]


def test_chance_is_one_over_the_classes_of_a_classification_set():
    records = dataset_records()
    assert records["cub200"].chance == pytest.approx(0.5)
    assert records["shapes:hue"].chance == pytest.approx(12.5)  # eight hue classes
    assert records["shapes:position"].chance is None  # a regression has no chance accuracy


def test_a_registered_set_is_validated_normalised_and_announced_from_its_record(svhn, tmp_path):
    assert load_config(None, ["data.dataset=svhn"]).data.dataset == "svhn"
    mean, std, kind = probe_normalization("svhn", torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert (mean, std, kind) == ([0.4, 0.5, 0.6], [0.2, 0.3, 0.4], "official constants")
    assert pending_downloads(["svhn"], tmp_path) == [("svhn", 7)]


def test_the_registry_is_restored_after_a_test_that_registers():
    assert "svhn" not in dataset_records()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, quiet) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    pretrain(
        load_config(None, [*TINY_KEYS, "train.diagnostics_every=0"]), run_dir, console=quiet(), show_progress=False
    )
    return run_dir


def probed(trained: Path, dest: Path, results: dict[str, float]) -> Path:
    """A copy of the trained run, relabelled a CIFAR-10 run, with a probe.json holding `results`."""
    shutil.copytree(trained, dest, ignore=shutil.ignore_patterns(runs.PROBE))
    raw = apply_overrides(runs.load_run_config(trained).to_dict(), ["data.dataset='cifar10'"])
    runs.save_config(dest, build_config(raw, stored=True))
    entries = [
        {
            "dataset": name,
            "task": "classification",
            "protocol": "linear",
            "layers": [4],
            "status": "ok",
            "metrics": {"acc_best_test": {"mean": value, "std": 0.0, "values": [value]}},
            "params": {"epochs": 100, "lr": 0.01, "batch_size": 128, "seeds": [0]},
        }
        for name, value in results.items()
    ]
    checkpoint = {"path": runs.BACKBONE, "sha256": runs.file_sha256(dest / runs.BACKBONE)}
    runs.write_json(dest / runs.PROBE, {"format": 1, "run": dest.name, "checkpoint": checkpoint, "results": entries})
    return dest


def test_a_registered_set_gets_its_name_column_and_chance_line_in_the_report(svhn, trained, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    root = tmp_path / "runs"
    probed(trained, root / "simclr", {"cifar10": 80.0, "svhn": 40.0, "dtd": 30.0})
    report = build_report([root])
    (table,) = report.tables
    # after the built-in transfer sets (registration order), under its display name
    assert [column.key for column in table.columns][:3] == ["cifar10", "dtd", "svhn"]
    header = next(line for line in markdown(report, [root], None, None, tmp_path).splitlines() if "CIFAR-10 |" in line)
    assert "| DTD | SVHN |" in header
    lines: list[tuple[Axes, float]] = []  # (panel, level) of every horizontal line the plots draw
    axhline = Axes.axhline

    def spy(self: Axes, y: float = 0, *args: object, **kwargs: object) -> object:
        lines.append((self, y))
        return axhline(self, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "axhline", spy)
    write_plots(report, tmp_path / "figures")
    chance = {panel.get_title(): level for panel, level in lines}
    assert chance["SVHN"] == pytest.approx(4.0)
