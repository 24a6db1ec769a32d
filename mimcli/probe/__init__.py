"""Probes on cached frozen features: linear (the paper's protocol), kNN and ridge regression
(docs/probing.md). One module per probe; run.py probes a run and writes probe.json (records.py)."""

from mimcli.probe.knn import KNN_K, KNN_TEMPERATURE, knn_predict, knn_probe
from mimcli.probe.linear import LinearParams, fit_linear, linear_probe
from mimcli.probe.records import ProbeRecord, ProbeResult, ProbeStatus, Summary
from mimcli.probe.ridge import RIDGE_GRID, Ridge, r2_score, regression_probe
from mimcli.probe.run import (
    FORMAT,
    PROTOCOLS,
    extract_features_distributed,
    merge_records,
    missing_datasets,
    probe_dataset,
    run_probes,
)
from mimcli.probe.stats import VAL_FRACTION, summary, val_split

__all__ = [
    "FORMAT",
    "KNN_K",
    "KNN_TEMPERATURE",
    "PROTOCOLS",
    "RIDGE_GRID",
    "VAL_FRACTION",
    "LinearParams",
    "ProbeRecord",
    "ProbeResult",
    "ProbeStatus",
    "Ridge",
    "Summary",
    "extract_features_distributed",
    "fit_linear",
    "knn_predict",
    "knn_probe",
    "linear_probe",
    "merge_records",
    "missing_datasets",
    "probe_dataset",
    "r2_score",
    "regression_probe",
    "run_probes",
    "summary",
    "val_split",
]
