"""LARS against a hand computation and the reference behaviour; warm-up + cosine per step;
the ImageNet presets train for real (tiny overrides) on a generated folder streamed from disk."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from mimcli.config import load_config
from mimcli.train.optim import LARS, build_optimizer
from mimcli.train.schedules import learning_rate, warmup_cosine

W0 = [[3.0, 0.0], [0.0, 4.0]]  # norm 5
GW = [[0.3, -0.4], [0.0, 0.0]]
B0, GB = [1.0, -2.0], [0.5, 0.25]


def _official_lars_step(params, grads, buffers, lr, momentum, weight_decay, eeta=0.001):
    """SimCLR/modules/lars.py step() of the official code, transcribed in plain Python floats and lists:
    grad += wd * param; trust = eeta * ||param|| / ||grad|| for every parameter (the name-based exclusions
    are a TODO there); v = m * v + lr * trust * grad; param -= v."""
    out = []
    for p, g, v in zip(params, grads, buffers):
        g = [gi + weight_decay * pi for gi, pi in zip(g, p)]
        trust = eeta * math.sqrt(sum(x * x for x in p)) / math.sqrt(sum(x * x for x in g))
        v[:] = [momentum * vi + lr * trust * gi for vi, gi in zip(v, g)]
        out.append([pi - vi for pi, vi in zip(p, v)])
    return out


def test_lars_default_equals_the_official_step_on_every_parameter():
    """Two steps on a weight and a bias (the bias decayed and adapted too, as the official code executes),
    the learning rate changing between them (classic momentum: lr inside the buffer)."""
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    wd, m = 0.1, 0.9
    opt = LARS([w, b], lr=0.5, momentum=m, weight_decay=wd)
    params = [[x for row in W0 for x in row], list(B0)]
    buffers = [[0.0] * 4, [0.0] * 2]
    for lr in (0.5, 0.2):
        opt.param_groups[0]["lr"] = lr
        w.grad, b.grad = torch.tensor(GW, dtype=torch.float64), torch.tensor(GB, dtype=torch.float64)
        opt.step()
        params = _official_lars_step(params, [[x for row in GW for x in row], list(GB)], buffers, lr, m, wd)
        torch.testing.assert_close(w.detach().flatten(), torch.tensor(params[0], dtype=torch.float64))
        torch.testing.assert_close(b.detach(), torch.tensor(params[1], dtype=torch.float64))


def test_lars_exclude_1d_leaves_biases_unadapted():
    """train.lars_exclude_1d: the weight as official; the bias gets plain momentum SGD (no decay, trust 1)."""
    w = torch.tensor(W0, requires_grad=True)
    b = torch.tensor(B0, requires_grad=True)
    lr, wd, eta = 0.5, 0.1, 0.001
    opt = LARS([w, b], lr=lr, momentum=0.9, weight_decay=wd, eta=eta, exclude_1d=True)
    w.grad, b.grad = torch.tensor(GW), torch.tensor(GB)
    opt.step()
    d = [[0.6, -0.4], [0.0, 0.4]]  # g + wd w, norm sqrt(0.68)
    trust = eta * 5.0 / math.sqrt(0.68)
    expected_w = [[W0[i][j] - lr * trust * d[i][j] for j in range(2)] for i in range(2)]
    torch.testing.assert_close(w.detach(), torch.tensor(expected_w), rtol=1e-6, atol=0)
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - lr * 0.5, -2.0 - lr * 0.25]), rtol=1e-6, atol=0)


def test_lars_zero_weights_stay_at_zero_as_official():
    """trust = eta * 0 / ||g|| = 0: a tensor initialised at zero (BatchNorm biases) never moves."""
    w = torch.zeros(2, 2, requires_grad=True)
    opt = LARS([w], lr=1.0, momentum=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(w.detach(), torch.zeros(2, 2))


def test_lars_lr_is_per_256_images():
    config = load_config("imagenet-simclr", ["model.width=8"])
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, config.train, 1024, torch.device("cpu"))
    assert isinstance(optimizer, LARS)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.3 * 1024 / 256)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-6
    assert optimizer.param_groups[0]["eta"] == 0.001
    assert optimizer.param_groups[0]["exclude_1d"] is False  # train.lars_exclude_1d: the official LARS


def test_warmup_then_cosine_per_step():
    config = load_config(
        None,
        [
            "train.schedule=warmup_cosine",
            "train.warmup_epochs=0.5",
            "train.epochs=2",
            "train.lr=2.0",
            "train.optimizer=sgd",
        ],
    )
    lrs = [learning_rate(config.train, 256, step, steps_per_epoch=10) for step in range(20)]  # 5 warm-up of 20
    assert lrs[:6] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 2.0])
    assert lrs[6] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi / 15)))
    assert lrs[-1] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))
    assert warmup_cosine(20, 5, 20) == 0.0


@pytest.mark.parametrize("preset", ["imagenet-simclr", "imagenet-simclr-rc", "imagenet-simclr-lbe"])
def test_imagenet_presets_train_streamed_on_a_generated_folder(cli, tmp_path, preset):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))  # the streaming test's generator
    from test_stream import make_imagenet

    make_imagenet(tmp_path / "imagenet")  # 18 JPEGs of several aspect ratios in train/<wnid>/
    config = load_config(preset)
    assert (config.model.backbone, config.train.batch_size, config.data.image_size) == ("resnet50", 1024, 224)
    assert (
        config.regularizer.lam
        == {"imagenet-simclr": 1.0, "imagenet-simclr-rc": 0.1, "imagenet-simclr-lbe": 1.0}[preset]
    )
    out = tmp_path / "run"
    tiny = [
        "model.width=4",
        "data.image_size=32",
        "train.batch_size=8",
        "train.bn_group_size=4",  # the preset's DataParallel grouping, two groups of each view
        "train.epochs=1",
        "data.workers=0",
        "train.precision=fp32",
        "data.loader=stream",
        f"data.root='{tmp_path / 'imagenet'}'",
        "probe.datasets=[]",
    ]
    code, _, err = cli(
        "pretrain", "--preset", preset, *[a for s in tiny for a in ("--set", s)], "--no-progress", "--out", str(out)
    )
    assert code == 0, err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1
    assert math.isfinite(metrics[0]["loss"])
    assert metrics[0]["images_per_s"] * metrics[0]["seconds"] == pytest.approx(16)  # 2 steps of 8
