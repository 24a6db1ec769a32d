"""The per-term gradient-norm diagnostic (train.grad_norm_steps): each weighted term's gradient in the
backbone, measured on the step's own graph, and a run that measures it trains exactly as one that does not."""

from __future__ import annotations

import math

import pytest
import torch

from mimcli.config import load_config
from mimcli.data.batch import Batch
from mimcli.methods.compose import build_model
from mimcli.rundir import runs
from mimcli.train.loop import pretrain, sampled_steps
from tests.tiny import TINY_KEYS


def tiny(*extra: str):
    return load_config(None, [*TINY_KEYS, "method.name='simclr'", *extra])


def _alone(term: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The hand computation: autograd.grad of this term alone, flattened (zeros where it does not reach)."""
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


@pytest.mark.parametrize("lam", [0.5, 0.0])
def test_each_norm_is_that_weighted_term_s_gradient_alone(lam):
    model = build_model(tiny("regularizer.kind='lbe'", f"regularizer.lambda={lam}"), num_classes=1).train()
    torch.manual_seed(0)
    batch = Batch(torch.randn(8, 3, 32, 32), torch.zeros(4, dtype=torch.long), 2)
    terms = model(batch)
    norms = model.gradient_norms(terms)
    params = list(model.backbone.parameters())
    method = _alone(terms["loss_method"], params)
    reg = _alone(lam * terms["loss_reg"], params) if lam else torch.zeros_like(method)
    total = _alone(terms["loss"], params)
    assert norms["grad_norm_loss_method"] == pytest.approx(float(method.norm()), rel=1e-5)
    assert norms["grad_norm_loss_reg"] == pytest.approx(float(reg.norm()), rel=1e-5, abs=1e-12)
    assert norms["grad_norm_loss"] == pytest.approx(float(total.norm()), rel=1e-5)
    expected_cos = float(method @ reg / (method.norm() * reg.norm())) if lam else 0.0
    assert norms["grad_cos_loss_method_loss_reg"] == pytest.approx(expected_cos, rel=1e-4, abs=1e-12)
    assert all(p.grad is None for p in params)  # measured without touching .grad: the step's backward is its own


def test_lambda_weights_the_regulariser_norm():
    """The reg norm is of lambda * reg (what the backbone receives), so it scales with lambda."""
    torch.manual_seed(0)
    batch = Batch(torch.randn(8, 3, 32, 32), torch.zeros(4, dtype=torch.long), 2)
    norms = []
    for lam in (1.0, 0.1):
        torch.manual_seed(1)
        model = build_model(tiny("regularizer.kind='lbe'", f"regularizer.lambda={lam}"), num_classes=1).train()
        torch.manual_seed(2)  # the same noise draw
        norms.append(model.gradient_norms(model(batch))["grad_norm_loss_reg"])
    assert norms[1] == pytest.approx(0.1 * norms[0], rel=1e-5)


def test_sampled_steps_are_evenly_spaced_and_start_at_the_first():
    assert sampled_steps(15, 4) == {1, 4, 8, 12}
    assert sampled_steps(3, 5) == {1, 2, 3}
    assert sampled_steps(15, 0) == set()


def test_measuring_changes_nothing_else_in_the_run(tmp_path):
    plain, measured = tmp_path / "plain", tmp_path / "measured"
    keys = ("regularizer.kind='lbe'", "train.diagnostics_every=0")
    pretrain(tiny(*keys), plain, show_progress=False)
    pretrain(tiny(*keys, "train.grad_norm_steps=2"), measured, show_progress=False)
    a = torch.load(plain / runs.CHECKPOINT, weights_only=True)["model"]
    b = torch.load(measured / runs.CHECKPOINT, weights_only=True)["model"]
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
    [before], [after] = runs.read_metrics(plain), runs.read_metrics(measured)
    added = {"grad_norm_loss_method", "grad_norm_loss_reg", "grad_norm_loss", "grad_cos_loss_method_loss_reg"}
    assert set(after) - set(before) == added
    timing = ("seconds", "images_per_s")
    assert {k: v for k, v in after.items() if k not in added | set(timing)} == {
        k: v for k, v in before.items() if k not in timing
    }
    assert all(math.isfinite(after[k]) and after[k] > 0 for k in added - {"grad_cos_loss_method_loss_reg"})
