"""Training loop: every method x regulariser trains, resume is exact, run directories are protected."""

from __future__ import annotations

import json

import pytest
import torch

from mimcli.config import load_config, method_sections, regularizer_sections
from mimcli.data.batch import Batch
from mimcli.data.shapes import generate_shapes
from mimcli.errors import UsageError
from mimcli.methods.base import METHODS
from mimcli.methods.compose import build_model
from mimcli.regularizers.base import REGULARIZERS
from mimcli.rundir import runs
from mimcli.rundir.weights import load_backbone
from mimcli.train.loop import build_trainer, describe_model, pretrain
from tests.tiny import TINY as CLI_TINY
from tests.tiny import TINY_KEYS

TINY = TINY_KEYS
DATA = generate_shapes(64, seed=0)
# Every registered method and regulariser (the built-ins register themselves here): a new one is smoke-tested
# below without an edit to this file.
METHOD_NAMES = sorted(method_sections())
KINDS = sorted(regularizer_sections())


def tiny(method: str = "simclr", kind: str = "none", *extra: str):
    return load_config(None, [*TINY, f"method.name={method!r}", f"regularizer.kind={kind!r}", *extra])


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_method_and_regulariser_trains(tmp_path, method, kind):
    config = tiny(method, kind, "train.epochs=1")
    if METHODS[method].n_views < REGULARIZERS[kind].min_views:  # MIB and IP compare two views
        with pytest.raises(UsageError, match="compares two views"):
            build_trainer(config, tmp_path, data=DATA)
        return
    trainer = build_trainer(config, tmp_path, data=DATA)
    before = [p.detach().clone() for p in trainer.model.backbone.parameters()]
    result = trainer.train_epoch(None)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.terms.values())
    assert {"loss", "loss_method", "loss_reg"} <= set(result.terms)
    if kind == "lbe":
        assert "mi_lbe" in result.terms
    moved = [not torch.equal(a, b) for a, b in zip(before, trainer.model.backbone.parameters())]
    assert all(moved)


@pytest.mark.parametrize("method", ["simclr", "byol", "barlow"])
@pytest.mark.parametrize("kind", ["rc", "ip", "lbe"])
def test_lambda_zero_is_exactly_the_unregularised_loss(method, kind):
    torch.manual_seed(0)
    views = torch.randn(16, 3, 32, 32)
    batch = Batch(views, torch.zeros(8, dtype=torch.long), 2)
    plain = build_model(tiny(method, "none"), 10)
    regularised = build_model(tiny(method, kind, "regularizer.lambda=0.0", "regularizer.sigma=0.0"), 10)
    regularised.load_state_dict(plain.state_dict(), strict=False)
    torch.manual_seed(1)
    expected = plain(batch)["loss"]
    torch.manual_seed(1)
    got = regularised(batch)
    assert got["loss"].item() == expected.item()
    assert got["loss_reg"].item() != 0.0


def test_total_loss_is_method_plus_lambda_times_term():
    torch.manual_seed(0)
    model = build_model(tiny("simclr", "rc", "regularizer.lambda=0.25"), 10)
    out = model(Batch(torch.randn(16, 3, 32, 32), torch.zeros(8, dtype=torch.long), 2))
    assert out["loss"].item() == pytest.approx(out["loss_method"].item() + 0.25 * out["loss_reg"].item(), rel=1e-6)


def test_byol_target_follows_online_by_ema(tmp_path):
    trainer = build_trainer(tiny("byol"), tmp_path, data=DATA)
    method, backbone = trainer.model.method, trainer.model.backbone
    target_before = [p.clone() for p in method.target_backbone.parameters()]
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(1.0)
    method.on_step_end(backbone, 0.996)
    for before, online, after in zip(target_before, backbone.parameters(), method.target_backbone.parameters()):
        assert torch.allclose(after, 0.996 * before + 0.004 * online, atol=1e-6)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    config = tiny("simclr", "lbe", "train.epochs=2")
    straight = tmp_path / "straight"
    pretrain(config, straight, show_progress=False)

    halves = tmp_path / "halves"
    pretrain(tiny("simclr", "lbe", "train.epochs=1"), halves, show_progress=False)
    pretrain(config, halves, resume=True, show_progress=False)

    a = torch.load(straight / runs.CHECKPOINT, weights_only=True)
    b = torch.load(halves / runs.CHECKPOINT, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    metrics_a, metrics_b = runs.read_metrics(straight), runs.read_metrics(halves)
    assert [m["loss"] for m in metrics_a] == [m["loss"] for m in metrics_b]


def test_run_directory_files(tmp_path):
    config = tiny("byol", "rc", "train.epochs=2", "train.save_epochs=[1]")
    pretrain(config, tmp_path / "run", show_progress=False)
    run = tmp_path / "run"
    for name in ("config.toml", "metrics.jsonl", "checkpoint.pt", "backbone.pt", "run.json", "backbones/epoch-1.pt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert len(runs.read_metrics(run)) == 2
    assert runs.load_run_config(run) == config
    backbone, _ = load_backbone(run)
    assert not backbone.training
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "epoch", "rng", "config"} <= set(state)
    assert any(k.startswith("method.target_backbone") for k in state["model"])


def test_existing_run_is_refused_without_resume_or_force(tmp_path, cli):
    out = str(tmp_path / "run")
    assert cli("pretrain", "--preset", "simclr", *CLI_TINY, "--out", out)[0] == 0
    mtime = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    code, _, err = cli("pretrain", "--preset", "simclr", *CLI_TINY, "--out", out)
    assert code == 2
    assert "--resume" in err
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert cli("pretrain", "--preset", "simclr", *CLI_TINY, "--out", out, "--force")[0] == 0


def test_describe_model_labels():
    assert describe_model(tiny("simclr", "rc")) == "SimCLR + RC"
    assert describe_model(tiny("barlow", "none")) == "Barlow Twins"


def test_zero_epochs_saves_the_initial_backbone_as_a_baseline(tmp_path):
    config = tiny("simclr", "none", "train.epochs=0", "train.schedule='cosine'")
    pretrain(config, tmp_path / "run", show_progress=False)
    torch.manual_seed(config.train.seed)
    expected = build_model(config, 10).backbone.state_dict()
    saved = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    assert all(torch.equal(saved[name], value) for name, value in expected.items())
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
