"""A new method is one file outside the package: docs/extending.md's VICReg, loaded through run.plugins."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from mimcli.config import load_config, load_plugin, method_sections, regularizer_sections, training_plugins
from mimcli.errors import UsageError
from mimcli.rundir import runs
from tests.tiny import TINY

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


@pytest.fixture(scope="module")
def vicreg_file(tmp_path_factory) -> Path:
    """The docs' code block, byte for byte, as a file outside the package."""
    block = re.search(r"<!-- vicreg.py -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/extending.md lost its VICReg block"
    path = tmp_path_factory.mktemp("plugin") / "vicreg.py"
    path.write_text(block.group(1))
    return path


def test_vicreg_loss_matches_a_hand_computation(vicreg_file):
    load_plugin(str(vicreg_file))
    loss = sys.modules[method_sections()["vicreg"].__module__].vicreg_loss
    # z = [[1, 0], [-1, 0]] twice: no invariance or covariance term; var (unbiased) = (2, 0), so the hinge is
    # relu(1 - sqrt(2 + 1e-4)) = 0 and relu(1 - sqrt(1e-4)) = 0.99, mean 0.495 per view, halved and summed.
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert loss(z, z, 25.0, 25.0, 1.0).item() == pytest.approx(25 * 0.495, rel=1e-6)
    # z = [[1, 1], [-1, -1]]: cov = [[2, 2], [2, 2]], off-diagonal 2^2 * 2 / dim 2 = 4 per view; std above 1.
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert loss(z, z, 25.0, 25.0, 1.0).item() == pytest.approx(8.0, rel=1e-6)
    assert loss(z, torch.zeros(2, 2), 1.0, 0.0, 0.0).item() == pytest.approx(1.0)  # MSE of +-1 against 0


def test_vicreg_trains_through_the_cli_and_the_run_reloads_it(cli, tmp_path, vicreg_file):
    out = tmp_path / "run"
    code, stdout, err = cli(
        "pretrain",
        *TINY,
        "--set",
        "train.diagnostics_every=0",
        "--set",
        f"run.plugins=['{vicreg_file}']",
        "--set",
        "method.name='vicreg'",
        "--set",
        "method.std_weight=20.0",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert "VICReg" in stdout
    metrics = [json.loads(line) for line in (out / runs.METRICS).read_text().splitlines()]
    assert metrics[-1]["epoch"] == 1
    assert torch.isfinite(torch.tensor(metrics[-1]["loss_method"]))
    config = runs.load_run_config(out)  # what resume and `mim report` read
    assert config.method.name == "vicreg"
    assert config.method.std_weight == 20.0
    assert config.run.plugins == [str(vicreg_file.resolve())]
    assert config.method.label == "VICReg"
    assert "std_weight" in config.method.uses


def test_a_key_of_another_method_is_named_as_such(vicreg_file):
    overrides = [f"run.plugins=['{vicreg_file}']", "method.name='vicreg'", "method.temperature=0.5"]
    with pytest.raises(UsageError, match="'temperature' is a key of method simclr, not of method 'vicreg'"):
        load_config(None, overrides, training_plugins(overrides, trust=False))
    with pytest.raises(UsageError, match=r"method\.temprature: unknown key"):
        load_config(None, ["method.temprature=0.5"])
    with pytest.raises(UsageError, match="'rho' is a key of regularizer lbe, not of regularizer 'rc'"):
        load_config(None, ["regularizer.kind='rc'", "regularizer.rho=0.1"])


def test_a_missing_plugin_is_one_line_exit_2(cli, tmp_path):
    code, _, err = cli(
        "pretrain", *TINY, "--set", f"run.plugins=['{tmp_path / 'nope.py'}']", "--out", str(tmp_path / "run")
    )
    assert code == 2
    assert "run.plugins: cannot load" in err
    assert "nope.py" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_registry_order_labels_and_uses_are_the_old_report_constants():
    """The values report/constants.py and train.describe_model held before the registry (same report)."""
    methods, regularizers = method_sections(), regularizer_sections()
    assert list(methods)[:4] == ["simclr", "byol", "barlow", "supervised"]
    assert list(regularizers)[:6] == ["none", "rc", "lbe", "mib", "ip", "noise"]
    assert {n: methods[n].label for n in list(methods)[:4]} == {
        "simclr": "SimCLR",
        "byol": "BYOL",
        "barlow": "Barlow Twins",
        "supervised": "Supervised",
    }
    assert {n: regularizers[n].label for n in list(regularizers)[:6]} == {
        "none": "",
        "rc": "RC",
        "lbe": "LBE",
        "mib": "MIB",
        "ip": "IP",
        "noise": "noise",
    }
    assert {n: methods[n].uses for n in list(methods)[:4]} == {
        "simclr": ("temperature", "hidden_dim", "proj_dim"),
        "byol": ("base_momentum", "hidden_dim", "proj_dim"),
        "barlow": ("offdiag_weight", "hidden_dim", "proj_dim"),
        "supervised": (),
    }
    assert {n: regularizers[n].uses for n in list(regularizers)[:6]} == {
        "none": (),
        "noise": ("sigma",),
        "rc": ("lambda",),
        "lbe": ("lambda", "sigma", "rho", "block_weights"),
        "mib": ("lambda", "sigma"),
        "ip": ("lambda",),
    }
    for section in [*methods.values(), *regularizers.values()]:  # every declared key exists
        keys = {field.alias or name for name, field in section.model_fields.items()}
        assert set(section.uses) <= keys, section


def test_an_old_config_toml_with_every_methods_keys_still_loads(tmp_path):
    """Before the registry, config.toml held every method's keys; reading a run keeps the selected ones."""
    run = tmp_path / "old"
    run.mkdir()
    (run / runs.CONFIG).write_text(
        '[method]\nname = "byol"\ntemperature = 0.5\nhidden_dim = 512\n'
        "base_momentum = 0.99\noffdiag_weight = 0.01\n"
        '[regularizer]\nkind = "rc"\nlambda = 0.1\nsigma = 0.1\n'
    )
    config = runs.load_run_config(run)
    assert config.method.model_dump() == {"name": "byol", "hidden_dim": 512, "proj_dim": None, "base_momentum": 0.99}
    assert config.regularizer.lam == 0.1


def test_registries_are_restored_after_each_test(pytester):
    """conftest's restore_registries: what one test registers (a plugin's method, a probe data set) is gone
    in the next, so a test's outcome does not depend on which tests ran before it."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(
        test_two="""
from mimcli.config import datasets, method_sections
from mimcli.methods.base import METHODS


def test_registers():
    METHODS["leaked"] = METHODS["simclr"]
    datasets.dataset_records()  # the built-in records are loaded on first read
    datasets.DATASETS.pop("mnist")
    assert "simclr" in method_sections()


def test_sees_the_built_ins_only():
    assert "leaked" not in METHODS
    assert "mnist" in datasets.dataset_records()
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)
