"""The report: every source data set's accuracy table and sweeps, and the protocol lines read from the runs.

The pieces live in cells.py (types), accuracy.py (building a table) and sweeps.py."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimcli.config.datasets import dataset_records
from mimcli.errors import UsageError
from mimcli.report.accuracy import build_table, drop_duplicate_seeds, plural
from mimcli.report.cells import AccuracyTable
from mimcli.report.collect import Run, collect_runs, source_key
from mimcli.report.constants import EPOCHS, LAMBDA, METRICS
from mimcli.report.groups import group_runs
from mimcli.report.reference import load_reference
from mimcli.report.sweeps import SweepTable, build_sweep


@dataclass
class Report:
    metric: str
    runs: list[Run]
    tables: list[AccuracyTable]
    sweeps: list[SweepTable]
    warnings: list[str]
    reference: dict[str, Any] | None = None
    compare: str | None = None


def build_report(
    paths: list[Path], metric: str = "acc_best_test", compare: str | None = None, warnings: list[str] | None = None
) -> Report:
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    reference = load_reference(compare) if compare is not None else None
    warnings = warnings if warnings is not None else []
    runs_ = collect_runs(paths, warnings)
    if not runs_:
        raise UsageError(
            f"no finished run with probe results under {', '.join(map(str, paths))} ({len(warnings)} warnings above)"
        )
    return assemble(runs_, metric, warnings, reference, compare)


def assemble(
    runs_: list[Run],
    metric: str,
    warnings: list[str],
    reference: dict[str, Any] | None = None,
    compare: str | None = None,
) -> Report:
    """The report of runs already read: one accuracy table per source data set, then the sweeps."""
    by_source: dict[str, list[Run]] = defaultdict(list)
    for run in runs_:
        by_source[source_key(run.config)].append(run)
    order = {name: i for i, name in enumerate(dataset_records())}
    tables = []
    for source, members in sorted(by_source.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])):
        groups = group_runs(members)
        drop_duplicate_seeds(groups, warnings)
        tables.append(build_table(source, groups, metric, warnings, reference))
    sweeps = [s for axis in (LAMBDA, EPOCHS) for t in tables if (s := build_sweep(t, axis)) is not None]
    return Report(metric, runs_, tables, sweeps, warnings, reference, compare)


def foreign_line(run: Run) -> str:
    """How a model mim did not train was read: its source, feature layers, pooling, input and normalisation."""
    model = run.foreign or {}
    norm = model.get("normalization")
    norm_text = f"mean {norm['mean']} std {norm['std']} ({norm.get('from')})" if norm else "per data set"
    return (
        f"{run.model} = {model.get('source')}: layers {','.join(model.get('feature_layers') or [])} "
        f"({model.get('pool')} pooled), {model.get('input_size')} px, normalisation {norm_text}"
    )


def protocol_lines(report: Report) -> list[tuple[str, str]]:
    """(what, value) pairs describing how the runs were trained and probed, read from the runs."""

    def distinct(values: list[Any]) -> str:
        counts = Counter(map(str, values))
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{v} ({plural(n, 'run')})" for v, n in sorted(counts.items()))

    trained = [run for run in report.runs if run.foreign is None]
    cfgs = [run.config for run in trained]
    probes = [r for run in report.runs for r in run.records]
    lines = [("runs", str(len(trained)))] if trained else []
    lines += (
        [
            ("backbone", distinct([f"{c.model.backbone}, width {c.model.width}, stem {c.model.stem}" for c in cfgs])),
            (
                "pretraining data",
                distinct(
                    [
                        f"{source_key(c)} at {c.data.image_size} px"
                        + (f", subset {c.data.subset}" if c.data.subset else "")
                        for c in cfgs
                    ]
                ),
            ),
            ("method", distinct([run.model for run in trained])),
            ("epochs", distinct([c.train.epochs for c in cfgs])),
            ("batch size", distinct([c.train.batch_size for c in cfgs])),
            (
                "optimiser",
                distinct(
                    [
                        f"{c.train.optimizer} lr {c.train.lr:g}, weight decay {c.train.weight_decay:g}, "
                        f"{c.train.schedule} schedule"
                        for c in cfgs
                    ]
                ),
            ),
            ("training seeds", ", ".join(map(str, sorted({c.train.seed for c in cfgs})))),
        ]
        if trained
        else []
    )
    lines += [("not trained by mim", foreign_line(run)) for run in report.runs if run.foreign is not None]
    for protocol in sorted({r.get("protocol") for r in probes}, key=str):
        group = [r for r in probes if r.get("protocol") == protocol]
        skipped = ("selection", "seeds", "preprocessing")
        params = [{k: v for k, v in (r.get("params") or {}).items() if k not in skipped} for r in group]
        text = distinct([", ".join(f"{k} {v}" for k, v in p.items()) for p in params])
        layers = distinct([",".join(map(str, r.get("layers") or [])) for r in group])
        seeds = sorted({s for r in group for s in (r.get("params") or {}).get("seeds", [])})
        lines.append((f"{protocol} probe", f"layers {layers}; {text}" + (f"; probe seeds {seeds}" if seeds else "")))
        selections = {r.get("params", {}).get("selection") for r in group} - {None}
        lines.extend((f"{protocol} selection", s) for s in sorted(selections))
    lines.append(("table metric", f"{report.metric}: {METRICS[report.metric]}; kNN: acc; regression: R²"))
    return lines
