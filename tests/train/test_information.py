"""Mutual-information estimators against closed forms, and the training-time diagnostics built on them."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

from mimcli.config import apply_overrides, build_config, load_config
from mimcli.report import run_report
from mimcli.rundir import runs
from mimcli.train.diagnostics import KEY, Diagnostics, diagnostics_interval, factor_estimates, z_resamples
from mimcli.train.loop import build_trainer, pretrain
from mimcli.train.mutual_information import (
    correlated_gaussians,
    cosine_scores,
    gaussian_gram,
    gaussian_mutual_information,
    infonce,
    kernel_width,
    ksg,
    label_gram,
    renyi_entropy,
    renyi_mutual_information,
    resampled_interval,
)
from tests.tiny import TINY_KEYS


def gaussians(n: int, dims: int, rho: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return correlated_gaussians(n, dims, rho, torch.Generator().manual_seed(seed))


def test_gaussian_closed_form():
    assert gaussian_mutual_information(0.0, 3) == 0.0
    assert gaussian_mutual_information(0.6, 2) == pytest.approx(-math.log(0.64))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ksg_matches_correlated_gaussians(rho):
    # KSG on 1-D pairs, N = 2000, k = 3: over seeds 0-4 the error measured -0.012 +- 0.020 nats
    # (rho = 0) and -0.005 +- 0.019 (rho = 0.9), so 0.06 is about 3 standard deviations.
    x, y = gaussians(2000, 1, rho)
    assert ksg(x, y).item() == pytest.approx(gaussian_mutual_information(rho, 1), abs=0.06)


def test_ksg_counts_by_hand():
    # four points on a line, y = x: joint distance = |x_i - x_j|; k = 1 -> epsilon_i = nearest gap,
    # nobody is strictly closer than epsilon, so n_x = n_y = 0 and I = psi(1) + psi(4) - 2 psi(1) = psi(4) - psi(1)
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    assert ksg(x, x.clone(), k=1).item() == pytest.approx(1 + 1 / 2 + 1 / 3, rel=1e-12)  # psi(4) - psi(1)
    with pytest.raises(ValueError):
        ksg(x, x, k=4)


def test_infonce_with_the_optimal_critic_approaches_the_gaussian_mi():
    # the log density ratio is the optimal critic; for I << log N the bound is nearly tight
    rho, n = 0.5, 1024
    x, y = gaussians(n, 1, rho)
    scores = -((y.T - rho * x) ** 2) / (2 * (1 - rho**2)) + y.T**2 / 2  # log p(y_j | x_i) - log p(y_j)
    estimate = infonce(scores).item()
    truth = gaussian_mutual_information(rho, 1)
    assert estimate == pytest.approx(truth, abs=0.05)


def test_infonce_is_bounded_by_log_n_and_zero_for_independent_samples():
    n = 256
    x, _ = gaussians(n, 16, 0.0)
    assert infonce(cosine_scores(x, x, temperature=0.01)).item() <= math.log(n) + 1e-12
    assert infonce(cosine_scores(x, x, temperature=0.01)).item() == pytest.approx(math.log(n), abs=1e-3)
    x, y = gaussians(n, 16, 0.0)
    # a lower bound on I = 0: a fixed critic that sees spurious similarity pays for it, about
    # -Var(s_ij) / 2 = -(1/16) / 0.1^2 / 2 = -3.1 nats here; with temperature 1 the penalty is 100 x smaller
    assert infonce(cosine_scores(x, y)).item() == pytest.approx(-1 / 16 / 0.1**2 / 2, abs=0.6)
    assert infonce(cosine_scores(x, y, temperature=1.0)).item() == pytest.approx(-1 / 16 / 2, abs=0.06)
    # a hand case: 2 x 2 scores
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    expected = math.log(2) + (1 - math.log(math.e + 1))
    assert infonce(scores).item() == pytest.approx(expected, rel=1e-12)


def test_renyi_entropy_of_labels_is_the_renyi_entropy_of_class_frequencies():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    p = torch.tensor([0.3, 0.2, 0.5], dtype=torch.float64)
    for alpha in (1.01, 2.0):
        expected = math.log((p**alpha).sum().item()) / (1 - alpha)
        assert renyi_entropy(label_gram(labels), alpha).item() == pytest.approx(expected, rel=1e-10)
    # identical copies: the Hadamard square of a delta kernel is itself, so I(Y; Y) = S(Y)
    gram = label_gram(labels)
    assert renyi_mutual_information(gram, gram).item() == pytest.approx(renyi_entropy(gram).item(), rel=1e-10)


def test_renyi_is_near_zero_when_independent_and_grows_with_correlation():
    values = []
    for rho in (0.0, 0.3, 0.6, 0.9):
        x, y = gaussians(256, 2, rho)
        values.append(renyi_mutual_information(gaussian_gram(x), gaussian_gram(y)).item())
    assert values == sorted(values)
    assert abs(values[0]) < 0.1  # independent floor at N = 256, d = 2: 0.037 +- 0.005 over seeds 0-9
    # identical copies: I(X; X) = S(X o X), which the kernel makes a proper entropy: below log N
    x, _ = gaussians(256, 2, 0.0)
    gram = gaussian_gram(x)
    assert 0 < renyi_mutual_information(gram, gram).item() < math.log(256)


def test_kernel_width_is_scale_free():
    x, _ = gaussians(128, 4, 0.0)
    assert kernel_width(10 * x) == pytest.approx(10 * kernel_width(x), rel=1e-12)
    assert torch.allclose(gaussian_gram(10 * x), gaussian_gram(x))


# ------------------------------------------------------------------------------------------- diagnostics


TINY = [*TINY_KEYS, "train.epochs=2", "train.diagnostics_images=32"]


def test_interval_defaults_to_every_epoch_on_shapes_only():
    assert diagnostics_interval(load_config(None, ["data.dataset=shapes"])) == 1
    assert diagnostics_interval(load_config(None, ["data.dataset=cifar10"])) == 0
    assert diagnostics_interval(load_config(None, ["data.dataset=shapes", "train.diagnostics_every=0"])) == 0
    assert diagnostics_interval(load_config(None, ["train.diagnostics_every=5"])) == 5


def test_measurement_touches_neither_model_nor_rng(tmp_path):
    trainer = build_trainer(load_config(None, TINY), tmp_path)
    assert trainer.diagnostics is not None
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    first = trainer.measure()[KEY]
    again = trainer.measure()[KEY]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in state.items())
    assert trainer.model.backbone.training
    first.pop("seconds"), again.pop("seconds")
    assert first == again  # fixed images, fixed views
    assert set(first) == {
        "z1_z2_renyi",
        "z1_z2_infonce",
        "z1_z2_ksg",
        "z_v_renyi",
        "z_v_ksg",
        *(f"z_{f}_renyi{end}" for f in ("shape", "hue", "position") for end in ("", "_shuffled", "_low", "_high")),
    }


def test_shuffled_floor_is_near_zero_on_independent_data_and_the_interval_holds_the_estimate():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (256,), generator=generator)
    independent = torch.randn(256, 2, generator=generator, dtype=torch.float64)
    dependent = independent + 3 * torch.stack([labels % 2, labels // 2], 1).double()
    for z in (independent, dependent):
        gram, floors = gaussian_gram(z), torch.Generator().manual_seed(1)
        found = factor_estimates("k", gram, labels, floors, z_resamples(gram, floors, 20))
        assert abs(found["k_shuffled"]) < 0.05  # labels permuted: no dependence left (log N is 5.5)
        assert found["k_low"] <= found["k"] <= found["k_high"]
    assert abs(found["k"]) > 0.1 + found["k_high"] - found["k_low"]  # dependent: beyond the floor and interval
    gram = gaussian_gram(independent)
    independent_point = factor_estimates("k", gram, labels, generator, z_resamples(gram, generator, 2))["k"]
    assert abs(independent_point) < 0.05
    # the interval is the point plus the resampled values' spread about their own mean (2.5 % and 97.5 %)
    assert resampled_interval(1.0, [0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx((1.0 - 1.9, 1.0 + 1.9))


def test_an_untrained_run_records_the_estimates_before_the_first_step(tmp_path):
    pretrain(load_config(None, [*TINY, "train.epochs=0"]), tmp_path / "init", show_progress=False)
    [line] = runs.read_metrics(tmp_path / "init")
    assert line["epoch"] == 0
    before = build_trainer(load_config(None, TINY), tmp_path / "unused").measure()[KEY]  # same seed, not yet trained
    line[KEY].pop("seconds"), before.pop("seconds")
    assert line[KEY] == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """Two real 2-epoch runs with diagnostics: one straight through, one resumed after epoch 1."""
    root = tmp_path_factory.mktemp("information")
    straight, halves = root / "straight", root / "halves"
    pretrain(load_config(None, TINY), straight, show_progress=False)
    pretrain(load_config(None, [*TINY, "train.epochs=1"]), halves, show_progress=False)
    pretrain(load_config(None, TINY), halves, resume=True, show_progress=False)
    return straight, halves


def estimates(run: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in m[KEY].items() if k != "seconds"} for m in runs.read_metrics(run)]


def test_resume_with_diagnostics_equals_an_uninterrupted_run(trained):
    straight, halves = trained
    a = torch.load(straight / runs.CHECKPOINT, weights_only=True)
    b = torch.load(halves / runs.CHECKPOINT, weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert len(estimates(straight)) == 2
    assert estimates(straight) == estimates(halves)


def probed_copy(run: Path, dest: Path, overrides: list[str]) -> Path:
    """The run under another config, with a minimal probe.json so that `mim report` reads it."""
    shutil.copytree(run, dest)
    runs.save_config(dest, build_config(apply_overrides(runs.load_run_config(run).to_dict(), overrides)))
    metrics = {"acc_best_test": {"mean": 50.0, "std": 0.0, "values": [50.0]}}
    runs.write_json(
        dest / runs.PROBE,
        {
            "format": 1,
            "run": dest.name,
            "checkpoint": {"path": runs.BACKBONE},
            "results": [
                {
                    "dataset": "shapes:shape",
                    "task": "classification",
                    "protocol": "linear",
                    "layers": [4],
                    "status": "ok",
                    "metrics": metrics,
                    "params": {},
                }
            ],
        },
    )
    return dest


def test_report_records_and_plots(trained, tmp_path):
    straight, _ = trained
    root = tmp_path / "runs"
    probed_copy(straight, root / "simclr", [])
    probed_copy(straight, root / "simclr-rc", ["regularizer.kind='rc'"])
    console = Console(file=io.StringIO(), width=250)
    run_report([root], fmt="json", console=console, err_console=Console(file=io.StringIO()))
    rows = [r for r in json.loads(console.file.getvalue()) if r["task"] == "information"]
    simclr = {(r["epoch"], r["metric"]): r["value"] for r in rows if r["model"] == "SimCLR"}
    for epoch, values in enumerate(estimates(straight), start=1):
        for name, value in values.items():
            assert simclr[(epoch, f"info:{name}")] == value
    assert {r["dataset"] for r in rows} == {"shapes"}
    assert len(rows) == 2 * 2 * 17

    out = tmp_path / "records.csv"
    run_report([root], fmt="csv", out=out, console=console, err_console=Console(file=io.StringIO()))
    parsed = list(csv.DictReader(out.open()))
    assert list(parsed[0])[-1] == "epoch"
    assert {r["epoch"] for r in parsed} == {"", "1", "2"}

    image = pytest.importorskip("matplotlib.image")
    plots = tmp_path / "plots"
    run_report([root], plots=plots, console=console, err_console=Console(file=io.StringIO()))
    for name in ("information-plane.png", "information-epochs.png", "information-factors-shapes.png"):
        pixels = image.imread(plots / name)
        assert pixels.ndim == 3, name
        assert pixels.shape[0] > 200, name
        assert pixels.shape[1] > 300, name


def test_diagnostics_off_writes_no_estimates(tmp_path):
    pretrain(
        load_config(None, [*TINY, "train.epochs=1", "train.diagnostics_every=0"]), tmp_path / "r", show_progress=False
    )
    assert [KEY in m for m in runs.read_metrics(tmp_path / "r")] == [False]
    assert Diagnostics.build(load_config(None, ["data.dataset=cifar10"]), None, None, torch.device("cpu")) is None  # type: ignore[arg-type]
