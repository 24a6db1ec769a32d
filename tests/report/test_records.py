"""Run records: `mim report --records DIR` writes one JSON file per run, and a report read from the records
is the report read from the runs (tables, sweeps, protocol, loss histories)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mimcli.config import apply_overrides, build_config, load_config
from mimcli.report.render import markdown_table, rich_sweep
from mimcli.report.run_records import SUFFIX
from mimcli.report.tables import build_report, protocol_lines
from mimcli.rundir import runs
from mimcli.train.loop import pretrain
from tests.tiny import TINY_BASE

TINY = [*TINY_BASE, "train.batch_size=32", "train.epochs=1", "train.diagnostics_every=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, quiet) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    pretrain(load_config(None, TINY), run_dir, console=quiet(), show_progress=False)
    return run_dir


def probe(shape: float, hue: float) -> list[dict]:
    def linear(dataset: str, value: float) -> dict:
        return {
            "dataset": dataset,
            "task": "classification",
            "protocol": "linear",
            "layers": [4],
            "status": "ok",
            "metrics": {"acc_best_test": {"mean": value, "std": 0.0, "values": [value]}},
            "params": {"epochs": 100, "lr": 0.01, "seeds": [0]},
        }

    return [linear("shapes:shape", shape), linear("shapes:hue", hue)]


def copy_run(trained: Path, dest: Path, overrides: list[str], results: list[dict]) -> None:
    shutil.copytree(trained, dest)
    raw = apply_overrides(runs.load_run_config(trained).to_dict(), overrides)
    runs.save_config(dest, build_config(raw, stored=True))
    runs.write_json(dest / runs.PROBE, {"format": 1, "results": results})


@pytest.fixture
def study(trained, tmp_path) -> Path:
    """A folder of runs: SimCLR at two seeds, + RC at two lambdas (a sweep subfolder), random init."""
    root = tmp_path / "runs"
    copy_run(trained, root / "seeds" / "s0", ["train.seed=0"], probe(60.0, 30.0))
    copy_run(trained, root / "seeds" / "s1", ["train.seed=1"], probe(64.0, 28.0))
    copy_run(trained, root / "lambda" / "l0.1", ["regularizer.kind='rc'", "regularizer.lambda=0.1"], probe(58.0, 40.0))
    copy_run(trained, root / "lambda" / "l1", ["regularizer.kind='rc'", "regularizer.lambda=1.0"], probe(55.0, 45.0))
    copy_run(trained, root / "init", ["train.epochs=0"], probe(11.0, 13.0))
    return root


def rendered(paths: list[Path], quiet) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The report's markdown tables, its sweep tables (as text) and its protocol lines."""
    report = build_report(paths, "acc_best_test", None, [])
    tables = [line for table in report.tables for line in [table.title, *markdown_table(table, None), *table.spread]]
    console = quiet()
    for sweep in report.sweeps:
        for part in rich_sweep(sweep):
            console.print(part)
    return tables, console.file.getvalue().splitlines(), protocol_lines(report)


def test_a_report_from_records_equals_the_report_from_the_runs(cli, study, tmp_path, quiet):
    records = tmp_path / "records"
    code, _, err = cli("report", str(study), "--records", str(records))
    assert code == 0, err
    written = sorted(p.relative_to(records).as_posix() for p in records.rglob(f"*{SUFFIX}"))
    assert written == [
        f"init{SUFFIX}",
        f"lambda/l0.1{SUFFIX}",
        f"lambda/l1{SUFFIX}",
        "seeds/s0" + SUFFIX,
        "seeds/s1" + SUFFIX,
    ]
    from_runs, from_records = rendered([study], quiet), rendered([records], quiet)
    assert from_records == from_runs
    assert any("SimCLR + RC" in line for line in from_runs[0])  # the tables are not empty


def test_a_record_holds_the_history_and_no_label_or_weights(cli, study, tmp_path):
    records = tmp_path / "records"
    assert cli("report", str(study / "seeds" / "s0"), "--records", str(records))[0] == 0
    data = json.loads((records / f"s0{SUFFIX}").read_text())
    assert sorted(data) == ["config", "format", "kind", "metrics", "results", "run"]
    assert data["metrics"] == runs.read_metrics(study / "seeds" / "s0")
    assert data["results"] == probe(60.0, 30.0)
    assert "label" not in data["run"]  # the row label follows the reading mim's report code
    assert "/" not in data["run"]["command"][0]  # the program's name, not one machine's path to it
    assert data["config"]["train"]["seed"] == 0


def test_records_of_records_are_the_same_records(cli, study, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli("report", str(study), "--records", str(first))[0] == 0
    assert cli("report", str(first), "--records", str(second))[0] == 0
    for path in first.rglob(f"*{SUFFIX}"):
        assert (second / path.relative_to(first)).read_bytes() == path.read_bytes()


def test_a_broken_record_is_skipped_with_a_warning_and_other_json_is_ignored(cli, study, tmp_path):
    records = tmp_path / "records"
    assert cli("report", str(study / "seeds"), "--records", str(records))[0] == 0
    (records / f"broken{SUFFIX}").write_text('{"kind": "something else"}')
    (records / "notes.json").write_text("[]")
    code, _, err = cli("report", str(records))
    assert code == 0
    assert f"broken{SUFFIX}: unreadable run record (not a mim run record)" in " ".join(err.split())
    assert "notes" not in err


def test_records_into_a_file_is_a_usage_error(cli, study, tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    code, _, err = cli("report", str(study), "--records", str(target))
    assert (code, target.read_text()) == (2, "mine")
    assert "is not a folder" in err
