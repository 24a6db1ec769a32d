"""Grouping runs into table rows: runs whose settings differ only in train.seed, and their labels."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mimcli.config import RunConfig, method_sections, regularizer_sections
from mimcli.report.collect import Run
from mimcli.report.constants import EPOCHS, IGNORED_KEYS, LAMBDA
from mimcli.report.naming import random_init_label


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings(config: RunConfig) -> dict[str, Any]:
    """The config keys that make a run a different experiment (seed, names and execution details left out)."""
    flat = flatten(config.to_dict())
    keep = {}
    for key, value in flat.items():
        section, _, rest = key.partition(".")
        name = rest.split(".")[0]
        if key.startswith(IGNORED_KEYS):
            continue
        if section == "regularizer" and name != "kind" and name not in config.regularizer.uses:
            continue
        if section == "method" and name != "name" and name not in config.method.uses:
            continue
        if key.startswith("data.shapes.") and config.data.dataset != "shapes":
            continue
        if key == "data.root" and config.data.dataset != "imagefolder":
            continue
        keep[key] = value
    return keep


def run_settings(run: Run) -> dict[str, Any]:
    """A run's settings; a foreign model's are its probe data's plus what model.json says it is."""
    if run.foreign is None:
        return settings(run.config)
    kept = {k: v for k, v in settings(run.config).items() if k.startswith(("data.", "probe."))}
    taken = ("source", "weights", "seed", "feature_layers", "pool", "input_size", "normalization")
    return kept | {f"model.{k}": run.foreign.get(k) for k in taken}


def frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class Group:
    """Runs that differ only in train.seed: one table row."""

    runs: list[Run]
    settings: dict[str, Any]
    label: str = ""

    @property
    def config(self) -> RunConfig:
        return self.runs[0].config

    @property
    def model(self) -> str:
        return self.runs[0].model

    @property
    def foreign(self) -> bool:
        """A model mim did not train (its row follows mim's rows; it is nobody's baseline)."""
        return self.runs[0].foreign is not None

    @property
    def random_init(self) -> bool:
        """A mim model that trained no step (train.epochs = 0): what every trained row is compared with."""
        return not self.foreign and self.config.train.epochs == 0

    def order(self) -> tuple[bool, int, int, float, int, str]:
        cfg = self.config
        # registration order: the built-ins as mimcli.methods / mimcli.regularizers list them, then plugins
        # (a run whose plugin is not imported here comes last)
        return (
            self.foreign,
            _position(list(method_sections()), cfg.method.name),
            _position(list(regularizer_sections()), cfg.regularizer.kind),
            self.runs[0].lam or 0.0,
            cfg.train.epochs,
            self.label,
        )


def _position(names: list[str], name: str) -> int:
    return names.index(name) if name in names else len(names)


def group_runs(runs_: list[Run]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs_:
        values = run_settings(run)
        key = frozen(values)
        groups.setdefault(key, Group([], values)).runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.config.train.seed, r.name))
    return list(groups.values())


def label_groups(groups: list[Group]) -> None:
    """Set each group's row label: trained rows told apart among themselves (an untrained row's 0 epochs
    adds no "(8 ep)" to them), untrained ones named "random init" (with their model when several)."""
    trained = [g for g in groups if not g.random_init]
    untrained = [g for g in groups if g.random_init]
    for group, label in zip(trained, distinguishing_labels([(g.model, g.settings) for g in trained])):
        group.label = label
    models = distinguishing_labels([(g.model, g.settings) for g in untrained], exclude=(EPOCHS,))
    for group, label in zip(untrained, models):
        group.label = random_init_label(label, len(untrained) > 1)


def describe_setting(key: str, value: Any) -> str:
    if key == LAMBDA:
        return f"λ={value:g}"
    if key == EPOCHS:
        return f"{value} ep"
    return f"{key}={value}"


def distinguishing_labels(items: list[tuple[str, dict[str, Any]]], exclude: tuple[str, ...] = ()) -> list[str]:
    """Labels for (model, settings) items: the model, plus the settings that tell same-model items apart."""
    by_model: dict[str, list[int]] = defaultdict(list)
    for index, (model, _) in enumerate(items):
        by_model[model].append(index)
    labels = [model for model, _ in items]
    for model, indices in by_model.items():
        if len(indices) < 2:
            continue
        keys = sorted({k for i in indices for k in items[i][1]}, key=lambda k: (k != LAMBDA, k != EPOCHS, k))
        differing = [k for k in keys if k not in exclude and len({frozen(items[i][1].get(k)) for i in indices}) > 1]
        for i in indices:
            parts = [describe_setting(k, items[i][1].get(k)) for k in differing]
            labels[i] = f"{model} ({', '.join(parts)})" if parts else model
    return labels
