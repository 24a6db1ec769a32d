"""Pins: the official values, written out here as literals read off the official code (file and line in
docs/fidelity.md), against mim's section defaults, presets, heads, losses and augmentation. Nothing below
builds its reference from mim's own config classes, so changing a default fails a test here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision.transforms as T
from torch import nn

from mimcli.config import AugmentSection, ProbeSection, TrainSection, load_config, method_section, regularizer_section
from mimcli.data.augment import BatchAugment
from mimcli.data.batch import Batch
from mimcli.methods import build_method
from mimcli.methods.compose import build_model
from mimcli.models.resnet import build_backbone
from mimcli.probe.imagenet import imagenet_params, uses_imagenet_recipe
from mimcli.train.optim import LARS, build_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))  # the augmentation test's helpers
from test_augment import assert_same_stat, smooth_images, view_features

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- section defaults


def test_train_section_defaults_are_the_official_recipe():
    t = TrainSection()
    # model.py L31 Adam(lr=3e-4) without weight decay; main.py L38/L39 each view forwarded on its own; no autocast
    assert (t.optimizer, t.lr, t.weight_decay, t.schedule, t.warmup_epochs) == ("adam", 3e-4, 0.0, "constant", 0.0)
    assert (t.bn_stats, t.bn_group_size, t.loss_precision) == ("per_view", 0, "fp32")
    # lars.py: momentum 0.9, decay and trust ratio on every parameter
    assert (t.momentum, t.lars_exclude_1d) == (0.9, False)
    # not the official recipe without a preset (docs/fidelity.md): the report's 30 epochs, the CPU's precision
    assert (t.epochs, t.batch_size, t.precision) == (30, 256, "auto")


def test_probe_section_defaults_are_eval_lr():
    p = ProbeSection()
    # eval_lr.py L15-L16 (batch 128, 100 epochs), L108 drop_last, L134 SGD 0.01, L135 MultiStepLR
    assert (p.protocol, p.epochs, p.batch_size, p.lr, p.drop_last) == ("linear", 100, 128, 0.01, True)
    assert (p.features, p.normalize, p.precision, p.recipe, p.layers) == ("raw", "official", "fp32", "auto", [4])


def test_method_and_regularizer_defaults_are_the_official_arguments():
    assert method_section(name="simclr").temperature == 0.5  # SimCLR/main.py L25
    assert method_section(name="byol").base_momentum == 0.996  # BYOL/main.py L21
    assert method_section(name="barlow").offdiag_weight == 0.01  # BarTwins/main.py L22 (--beta)
    lbe = regularizer_section(kind="lbe")
    assert (lbe.lam, lbe.sigma, lbe.lbe_rho(32), lbe.lbe_rho(224)) == (1.0, 0.1, 1 / 20, 1 / 20)  # --lamb, --zeta


# --------------------------------------------------------------------------------------------- losses at defaults


def _official_nt_xent(z_i, z_j, temperature):
    """SimCLR/modules/nt_xent.py L26-L46, with utils.py's mask, on the CPU."""
    n = z_i.shape[0]
    mask = torch.ones((2 * n, 2 * n)).bool().fill_diagonal_(0)
    for i in range(n):
        mask[i, n + i] = mask[n + i, i] = 0
    p1 = torch.cat((z_i, z_j), dim=0)
    sim = nn.CosineSimilarity(dim=2)(p1.unsqueeze(1), p1.unsqueeze(0)) / temperature
    positive = torch.cat((torch.diag(sim, n), torch.diag(sim, -n)), dim=0).reshape(2 * n, 1)
    negative = sim[mask].reshape(2 * n, -1)
    logits = torch.cat((positive, negative), dim=1)
    return nn.CrossEntropyLoss(reduction="sum")(logits, torch.zeros(2 * n).long()) / (2 * n)


def _official_barlow(z1, z2, beta):
    """BarTwins/main.py L30-L40 (criterion)."""
    n, d = z1.size()
    z1n = (z1 - z1.mean(0, keepdim=True)) / z1.std(0, keepdim=True)
    z2n = (z2 - z2.mean(0, keepdim=True)) / z2.std(0, keepdim=True)
    c = torch.mm(z1n.transpose(0, 1), z2n) / n
    eye = torch.eye(d, dtype=z1.dtype)
    return ((beta * (1.0 - eye) + eye) * (c - eye).pow(2)).sum()


@pytest.mark.parametrize("method", ["simclr", "barlow"])
def test_method_losses_at_their_default_settings_equal_the_official_ones(method):
    """The method built from its default section: NT-Xent with temperature 0.5 (main.py L25, L118), Barlow Twins
    with beta 0.01 on L2-normalised projections (bartwins.py: args.normalize)."""
    backbone = build_backbone("resnet18", 8, 32)
    torch.manual_seed(0)
    head = build_method(method_section(name=method), backbone, 1).double().eval()
    h = torch.randn(12, backbone.out_dim, dtype=torch.float64)
    got = head.loss({"layer4": h}, Batch(torch.zeros(12, 3, 2, 2), torch.zeros(6, dtype=torch.long), 2))["method"]
    z = nn.functional.normalize(head.projector(h), dim=1)
    expected = _official_nt_xent(z[:6], z[6:], 0.5) if method == "simclr" else _official_barlow(z[:6], z[6:], 0.01)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


# --------------------------------------------------------------------------------------------- heads


def _modules(head: nn.Module) -> list[str]:
    """Each module of a head as the official code writes it."""
    names = []
    for m in head.children():
        if isinstance(m, nn.Linear):
            names.append(f"Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            names.append(f"BatchNorm1d({m.num_features})")
        else:
            names.append(type(m).__name__)
    return names


def _official_mlp(n_in, n_out, bn):
    """nn.Linear(n_features, n_features) [- BatchNorm1d(n_features)] - ReLU - nn.Linear(n_features, projection_dim)."""
    norm = [f"BatchNorm1d({n_in})"] if bn else []
    return [f"Linear({n_in}, {n_in}, bias=True)", *norm, "ReLU", f"Linear({n_in}, {n_out}, bias=True)"]


@pytest.mark.parametrize(
    ("method", "backbone", "expected"),
    [
        ("simclr", "resnet18", {"projector": _official_mlp(512, 128, False)}),  # SimCLR/modules/simclr.py L20-L22
        ("simclr", "resnet50", {"projector": _official_mlp(2048, 128, False)}),  # n_features 2048 on ResNet-50
        (
            "byol",
            "resnet18",
            {"projector": _official_mlp(512, 128, True), "predictor": _official_mlp(128, 128, True)},
        ),  # BYOL/modules/byol.py L17-L24
        ("barlow", "resnet18", {"projector": _official_mlp(512, 1024, True)}),  # BarTwins/modules/bartwins.py
    ],
)
def test_heads_equal_the_official_heads_module_by_module(method, backbone, expected):
    """Every module in order: Linear sizes and bias, BatchNorm presence and width, the activation (full width)."""
    model = build_model(load_config(None, [f"method.name={method!r}", f"model.backbone={backbone!r}"]), 1)
    assert {name: _modules(getattr(model.method, name)) for name in expected} == expected


# --------------------------------------------------------------------------------------------- augmentation


def _official_transforms(size, s=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """SimCLR/modules/transforms.py L4-L19 (Transforms; mean/std: Transforms_imagenet L24-L33; s = 0.5:
    Supervised/modules/transforms.py), as written there."""
    color_jitter = T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    return T.Compose(
        [
            T.RandomResizedCrop(size=size),
            T.RandomHorizontalFlip(),
            T.RandomApply([color_jitter], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def _parameters(compose: T.Compose) -> dict[str, object]:
    crop, flip, jitter, grey, normalize = compose.transforms
    cj = jitter.transforms[0]
    return {
        "scale": tuple(crop.scale),
        "ratio": tuple(crop.ratio),
        "flip": flip.p,
        "jitter_p": jitter.p,
        "factors": (tuple(cj.brightness), tuple(cj.contrast), tuple(cj.saturation), tuple(cj.hue)),
        "grey": grey.p,
        "mean": tuple(normalize.mean),
        "std": tuple(normalize.std),
    }


def _ours(cfg: AugmentSection) -> dict[str, object]:
    augment = BatchAugment(cfg, 32)
    return {
        "scale": tuple(cfg.crop_scale),
        "ratio": tuple(cfg.crop_ratio),
        "flip": cfg.flip_p,
        "jitter_p": cfg.jitter_p,
        "factors": tuple(tuple(pytest.approx(x) for x in r) for r in augment.factor_ranges),
        "grey": cfg.grayscale_p,
        "mean": tuple(cfg.mean),
        "std": tuple(cfg.std),
    }


@pytest.mark.parametrize(
    ("preset", "official"),
    [
        ("paper-simclr", {}),
        ("paper-byol-stl10", {}),
        ("paper-supervised", {"s": 0.5}),
        ("imagenet-simclr-rc", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}),
    ],
)
def test_augmentation_equals_the_official_transforms(preset, official):
    """The preset's view recipe against torchvision objects built as the official code builds them."""
    assert _parameters(_official_transforms(32, **official)) == _ours(load_config(preset).augment)
    assert load_config(preset).augment.translate == 0


def test_default_views_have_the_statistics_of_the_official_transforms():
    """The default AugmentSection's views against the official Transforms(32) applied image by image."""
    cfg = AugmentSection()
    images = smooth_images(300, seed=5)
    ours = BatchAugment(cfg, 32)(images, torch.Generator().manual_seed(0))
    compose = _official_transforms(32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torch.stack([compose(image.float() / 255) for image in images])
    a, b = view_features(ours, cfg), view_features(theirs, cfg)
    for name in ["pixel mean", "pixel square", "red mean", "blue mean", "saturation", "contrast"]:
        assert_same_stat(a[name], b[name], torch.mean, f"mean {name}")


# --------------------------------------------------------------------------------------------- ImageNet presets


@pytest.mark.parametrize("preset", ["imagenet-simclr", "imagenet-simclr-rc", "imagenet-simclr-lbe"])
def test_imagenet_presets_dry_run_with_the_official_recipe(preset):
    """Resolved and built without data: projector 2048-2048-128, critic 1/20 on layer4, RC decoder from 2048,
    ImageNet normalisation, LARS 0.3 x 1024 / 256 on every parameter with a per-epoch cosine, 4 BatchNorm groups
    of 256 per view, fp32, and the eval_lr_imagenet.py probe."""
    config = load_config(preset)
    assert (config.model.backbone, config.data.image_size, config.train.batch_size) == ("resnet50", 224, 1024)
    assert (config.augment.mean, config.augment.std) == (IMAGENET_MEAN, IMAGENET_STD)
    t = config.train
    assert (t.optimizer, t.lr, t.weight_decay, t.momentum, t.lars_exclude_1d) == ("lars", 0.3, 1e-6, 0.9, False)
    assert (t.schedule, t.warmup_epochs, t.epochs, t.bn_group_size, t.precision) == ("cosine", 0.0, 200, 256, "fp32")
    model = build_model(config, num_classes=1)
    assert _modules(model.method.projector) == _official_mlp(2048, 128, False)
    optimizer = build_optimizer(model, t, 1024, torch.device("cpu"))
    assert isinstance(optimizer, LARS)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.2)
    kind = config.regularizer.kind
    if kind == "lbe":
        assert (model.regularizer.rho, model.regularizer.block_weights) == (1 / 20, {"layer4": 1.0})
    if kind == "rc":
        first = next(m for m in model.regularizer.modules() if isinstance(m, nn.Linear))
        assert (first.in_features, first.out_features, first.bias) == (2048, 3136, None)  # recons.py ReCon224
    assert config.regularizer.lam == {"none": 1.0, "rc": 0.1, "lbe": 1.0}[kind]
    assert uses_imagenet_recipe(config)
    probe = imagenet_params(config.probe)
    assert (probe.lr, probe.schedule, probe.init_std, probe.epochs, probe.batch_size) == (0.3, "cosine", 0.01, 100, 128)
