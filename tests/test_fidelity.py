"""The official computation (github.com/Haoqing-Wang/InfoCL) is mim's default: per-view BatchNorm,
PyTorch's default convolution init, the STL-10 unlabeled split, the probe normalisation, LBE's rho and
blocks on ImageNet, and the presets' script settings. docs/fidelity.md lists every row and its test."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mimcli.config import load_config, method_sections, regularizer_section, regularizer_sections
from mimcli.data import datasets
from mimcli.data.batch import Batch
from mimcli.data.datasets import load_pretrain_data
from mimcli.data.images import ImageData
from mimcli.methods.base import METHODS
from mimcli.methods.compose import build_model
from mimcli.models.resnet import build_backbone
from mimcli.models.viewnorm import PerViewBatchNorm, group_batchnorm, per_view_batchnorm, view_groups
from mimcli.probe.normalization import probe_normalization
from mimcli.regularizers import build_regularizer
from mimcli.regularizers.base import REGULARIZERS


def _bn_net() -> nn.Module:
    """BatchNorm2d and BatchNorm1d, as in a backbone followed by a head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Linear(6, 2),
    ).double()


def test_per_view_batchnorm_equals_two_separate_forwards():
    """Outputs, gradients, running statistics and batch counts of one 2N pass with per-view statistics
    equal those of the official two N-row forwards, in float64."""
    official = _bn_net().train()
    one_pass = per_view_batchnorm(copy.deepcopy(official)).train()
    assert sum(isinstance(m, PerViewBatchNorm) for m in one_pass.modules()) == 2
    v1, v2 = torch.randn(5, 3, 8, 8, dtype=torch.float64), torch.randn(5, 3, 8, 8, dtype=torch.float64) * 2 + 1
    weights = torch.randn(10, 2, dtype=torch.float64)

    expected = torch.cat([official(v1), official(v2)])
    (expected * weights).sum().backward()
    with view_groups(2):
        got = one_pass(torch.cat([v1, v2]))
    (got * weights).sum().backward()

    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for (name, a), b in zip(official.named_parameters(), one_pass.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12, msg=name)
    for (name, a), b in zip(official.named_buffers(), one_pass.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)
    assert int(one_pass[1].num_batches_tracked) == 2
    # and it is not what one joint pass computes
    joint = copy.deepcopy(official)
    assert not torch.allclose(joint(torch.cat([v1, v2])), expected)


def test_per_view_batchnorm_is_plain_batchnorm_outside_a_pass_and_in_eval():
    plain = _bn_net()
    converted = per_view_batchnorm(copy.deepcopy(plain))
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(converted(x), plain(x), rtol=0, atol=0)
    plain.eval(), converted.eval()
    with view_groups(2):
        torch.testing.assert_close(converted(x), plain(x), rtol=0, atol=0)
    assert converted.state_dict().keys() == plain.state_dict().keys()


def test_pretrain_model_uses_per_view_statistics_everywhere_by_default():
    config = load_config(
        None, ["model.width=8", "method.name='byol'", "regularizer.kind='rc'", "data.dataset='shapes'"]
    )
    model = build_model(config, num_classes=1)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    assert all(isinstance(m, PerViewBatchNorm) for m in norms)
    joint = build_model(load_config(None, ["model.width=8", "train.bn_stats='joint'"]), num_classes=1)
    assert not any(isinstance(m, PerViewBatchNorm) for m in joint.modules())
    supervised = build_model(load_config(None, ["model.width=8", "method.name='supervised'"]), num_classes=3)
    assert not any(isinstance(m, PerViewBatchNorm) for m in supervised.modules())  # one view: nothing to split


@pytest.mark.parametrize("method", sorted(method_sections()))  # every registered method and regulariser
@pytest.mark.parametrize("kind", sorted(regularizer_sections()))
def test_every_two_view_model_normalises_each_view_with_its_own_statistics(method, kind):
    """Row 4 of docs/fidelity.md for any method x regulariser, a new one included: every BatchNorm layer of a
    two-view model (backbone, heads, target, decoder) is per view; a one-view model has none to split."""
    if METHODS[method].n_views < REGULARIZERS[kind].min_views:
        return  # no such model (MIB and IP compare two views): tests/train/test_train.py checks the refusal
    config = load_config(None, ["model.width=8", f"method.name={method!r}", f"regularizer.kind={kind!r}"])
    norms = [m for m in build_model(config, num_classes=3).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    per_view = [isinstance(m, PerViewBatchNorm) for m in norms]
    assert all(per_view) if METHODS[method].n_views == 2 else not any(per_view)


def test_per_view_backbone_features_equal_two_forwards_of_the_official_backbone():
    config = load_config(None, ["model.width=8", "data.dataset='shapes'"])
    torch.manual_seed(0)
    model = build_model(config, num_classes=1).double().train()
    torch.manual_seed(0)
    official = build_backbone("resnet18", 8, 32).double().train()
    official.load_state_dict(model.backbone.state_dict())
    v1, v2 = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with view_groups(2):
        got = model.backbone(torch.cat([v1, v2]))
    a, b = official(v1), official(v2)
    for name in got:
        torch.testing.assert_close(got[name], torch.cat([a[name], b[name]]), rtol=1e-10, atol=1e-12)


def test_convolutions_keep_pytorch_default_init():
    """The official CIFAR / STL-10 ResNet (modules/resnet.py) never re-initialises its convolutions: nn.Conv2d's
    kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not torchvision's kaiming_normal fan_out."""
    backbone = build_backbone("resnet18", 64, 32)
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            bound = 1 / math.sqrt(module.weight[0].numel())
            weight = module.weight.detach()
            assert weight.abs().max() <= bound, name
            if weight.numel() > 10_000:  # uniform: std = bound / sqrt(3)
                assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05), name


def test_imagenet_convolutions_use_the_official_fan_out_normal_init():
    """resnet_imagenet.py: m.weight.data.normal_(0, math.sqrt(2. / (k * k * out_channels)))."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet50", 64, 224)
    conv = backbone.layer3[0].conv2  # 256 -> 256, 3x3
    expected = math.sqrt(2 / (3 * 3 * conv.out_channels))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)


def test_stl10_pretrains_on_the_unlabeled_split_only(monkeypatch, tmp_path):
    splits = {
        "unlabeled": ImageData(torch.full((6, 3, 96, 96), 1, dtype=torch.uint8), torch.full((6,), -1), ["a"]),
        "train": ImageData(torch.full((4, 3, 96, 96), 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ["a"]),
    }
    monkeypatch.setattr(datasets, "load_stl10", lambda root, split, download: copy.deepcopy(splits[split]))
    official = load_pretrain_data("stl10", str(tmp_path), 64, None, 0, False)
    assert len(official) == 6
    assert bool((official.images == 1).all())
    both = load_pretrain_data("stl10", str(tmp_path), 64, None, 0, False, stl10_split="unlabeled+train")
    assert len(both) == 10
    assert load_config(None, []).data.stl10_split == "unlabeled"


@pytest.mark.parametrize(
    ("source", "mean", "std"),
    [
        # transcribed from the official data_statistics.py
        ("cifar10", [0.5] * 3, [0.5] * 3),
        ("cifar100", [0.5] * 3, [0.5] * 3),
        ("stl10", [0.491, 0.482, 0.447], [0.247, 0.244, 0.262]),
        ("dtd", [0.533, 0.474, 0.426], [0.261, 0.250, 0.259]),
        ("mnist", [0.170] * 3, [0.320] * 3),
        ("fashionmnist", [0.348] * 3, [0.347] * 3),
        ("cub200", [0.483, 0.491, 0.424], [0.228, 0.224, 0.259]),
        ("flowers102", [0.518, 0.410, 0.329], [0.296, 0.249, 0.285]),
        ("gtsrb", [0.335, 0.291, 0.295], [0.267, 0.249, 0.251]),
        ("shapes-20000-5000-s0", [0.5] * 3, [0.5] * 3),  # pretrained with Normalize(0.5, 0.5), like CIFAR
    ],
)
def test_probe_normalisation_per_data_set(source, mean, std):
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    got_mean, got_std, _ = probe_normalization(source, images)
    assert got_mean == mean
    assert got_std == std
    train_mean, _, kind = probe_normalization(source, images, "train_stats")
    assert kind == "train-split statistics"
    assert train_mean == pytest.approx((images.double() / 255).mean((0, 2, 3)).tolist())


def test_an_image_folder_is_probed_with_its_train_statistics():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, _, kind = probe_normalization("imagefolder-x-0123", images)
    assert kind == "train-split statistics"
    assert mean == pytest.approx((images.double() / 255).mean((0, 2, 3)).tolist())


@pytest.mark.parametrize(
    ("size", "rho", "blocks"),
    [
        (32, 1 / 20, ("layer2", "layer3", "layer4")),
        (64, 1 / 20, ("layer2", "layer3", "layer4")),
        (224, 1 / 20, ("layer4",)),  # mi_estimators.py L8 executes "/20." (its "80 for ImageNet" is a comment);
        # main.py L52: layer4 only on ImageNet
    ],
)
def test_lbe_rho_and_blocks_follow_the_resolution(size, rho, blocks):
    backbone = build_backbone("resnet18", 8, size)
    lbe = build_regularizer(regularizer_section(kind="lbe"), backbone, size, 2)
    assert lbe.rho == rho
    assert tuple(lbe.block_weights) == blocks
    assert build_regularizer(regularizer_section(kind="lbe", rho=0.3), backbone, size, 2).rho == 0.3


def test_byol_model_sums_the_two_directions():
    """PretrainModel's BYOL term equals the official (l(p1, t2) + l(p2, t1)).mean(), written out here."""
    config = load_config(None, ["model.width=8", "method.name='byol'", "train.bn_stats='joint'"])
    torch.manual_seed(0)
    model = build_model(config, num_classes=1).double().eval()
    views = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    got = model(Batch(views, torch.zeros(4, dtype=torch.long), 2))["loss_method"]
    method = model.method
    h = model.backbone(views)["layer4"]
    p = method.predictor(method.projector(h))
    t = method.target_projector(method.target_backbone(views)["layer4"])
    cos = nn.functional.cosine_similarity
    expected = ((2 - 2 * cos(p[:4], t[4:], dim=1)) + (2 - 2 * cos(p[4:], t[:4], dim=1))).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


# Official main.sh lines (SimCLR/, BYOL/, BarTwins/, Supervised/): preset -> (batch, lambda, sigma).
# Epochs: every line says 200, so the paper-<name> presets train 200 and <name> keeps everything else at the
# report's 30 epochs. The RC decoder and LBE rho follow data.image_size (tested above).
OFFICIAL_SCRIPTS = {
    "simclr": (256, None, None),
    "simclr-rc": (256, 1.0, None),
    "simclr-lbe": (256, 1.0, 0.1),
    "simclr-ip": (256, 5e-4, None),
    "simclr-mib": (256, 5e-4, 0.1),
    "simclr-stl10": (256, None, None),
    "simclr-rc-stl10": (256, 1.0, None),
    "simclr-lbe-stl10": (256, 1.0, 0.1),
    "byol": (128, None, None),
    "byol-rc": (128, 0.1, None),
    "byol-lbe": (128, 0.1, 0.1),
    "byol-stl10": (256, None, None),
    "byol-rc-stl10": (256, 0.1, None),
    "byol-lbe-stl10": (256, 0.1, 0.1),
    "barlow": (128, None, None),
    "barlow-rc": (128, 1.0, None),
    "barlow-lbe": (128, 1.0, 0.1),
    "barlow-stl10": (256, None, None),
    "barlow-rc-stl10": (256, 1.0, None),
    "barlow-lbe-stl10": (256, 1.0, 0.1),
    "supervised": (256, None, None),
    "supervised-rc": (256, 0.001, None),
    "supervised-lbe": (256, 0.1, 0.01),
    "supervised-cifar100": (256, None, None),
    "supervised-rc-cifar100": (256, 0.01, None),
    "supervised-lbe-cifar100": (256, 1.0, 0.01),
}


@pytest.mark.parametrize("prefix, epochs", [("paper-", 200), ("", 30)])
@pytest.mark.parametrize("preset", sorted(OFFICIAL_SCRIPTS))
def test_paper_presets_match_the_official_scripts(preset, prefix, epochs):
    batch, lam, sigma = OFFICIAL_SCRIPTS[preset]
    config = load_config(prefix + preset)
    assert config.train.batch_size == batch
    assert config.train.epochs == epochs
    assert (config.train.optimizer, config.train.lr, config.train.weight_decay) == ("adam", 3e-4, 0.0)
    if lam is not None:
        assert config.regularizer.lam == lam
    if sigma is not None:
        assert config.regularizer.sigma == sigma
    if config.regularizer.kind == "lbe":  # rho and block_weights are LBE's own keys
        assert config.regularizer.rho is None
        assert config.regularizer.block_weights is None  # official by resolution
    assert config.train.bn_stats == "per_view"
    assert config.train.loss_precision == "fp32"
    assert config.data.stl10_split == "unlabeled"
    assert config.probe.normalize == "official"
    assert config.data.image_size == (64 if config.data.dataset == "stl10" else 32)
    if config.method.name != "supervised":  # the projector's keys (supervised has a linear classifier)
        assert config.method.proj_dim is None
        assert config.method.hidden_dim is None  # the method's own default, below
    if config.method.name == "simclr":
        assert config.method.temperature == 0.5  # main.py L25 (no main.sh line sets it)
    # the view recipe: test_fidelity_pins::test_augmentation_equals_the_official_transforms pins these values
    jitter = (0.4, 0.4, 0.4, 0.1) if config.method.name == "supervised" else (0.8, 0.8, 0.8, 0.2)
    augment = config.augment
    assert (augment.brightness, augment.contrast, augment.saturation, augment.hue) == jitter
    assert (augment.mean, augment.std, augment.translate) == ((0.5,) * 3, (0.5,) * 3, 0)
    probe = config.probe
    assert (probe.epochs, probe.batch_size, probe.lr, probe.drop_last) == (100, 128, 0.01, True)
    assert (probe.recipe, probe.precision, probe.features) == ("auto", "fp32", "raw")
    assert config.train.precision == "fp32"  # the official code has no autocast


def test_backbone_batchnorm_groups_equal_dataparallel_replicas():
    """train.bn_group_size: the official ImageNet run's DataParallel, emulated with replicas: each view
    forwarded on its own, its rows split over "GPUs"; the first GPU's replica is the module itself (its
    running statistics persist), the others are copies (theirs are dropped); gradients are summed."""
    official = _bn_net().train()
    grouped = group_batchnorm(per_view_batchnorm(copy.deepcopy(official)), 3).train()
    views = [torch.randn(6, 3, 8, 8, dtype=torch.float64) * (i + 1) + i for i in range(2)]
    weights = torch.randn(12, 2, dtype=torch.float64)

    outputs, copies = [], []
    for view in views:
        first, second = view.split(3)
        copies.append(copy.deepcopy(official))
        outputs += [official(first), copies[-1](second)]
    expected = torch.cat(outputs)
    (expected * weights).sum().backward()
    with view_groups(2):
        got = grouped(torch.cat(views))
    (got * weights).sum().backward()

    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for (name, a), b, *others in zip(
        official.named_parameters(), grouped.parameters(), *(c.parameters() for c in copies)
    ):
        summed = a.grad + sum(other.grad for other in others)  # DataParallel's reduce onto the first GPU
        torch.testing.assert_close(b.grad, summed, rtol=1e-10, atol=1e-12, msg=name)
    for (name, a), b in zip(official.named_buffers(), grouped.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)
    assert int(grouped[1].num_batches_tracked) == 2  # once per view, from its first group


def test_imagenet_presets_group_the_backbone_batchnorm_as_dataparallel():
    config = load_config("imagenet-simclr-rc", ["model.width=8"])
    assert config.train.bn_group_size == 256  # 1024 per view over 4 GPUs
    model = build_model(config, num_classes=1)
    backbone_layers = [m for m in model.backbone.modules() if isinstance(m, PerViewBatchNorm)]
    decoder_layers = [m for m in model.regularizer.modules() if isinstance(m, PerViewBatchNorm)]
    assert backbone_layers
    assert all(m.group_size == 256 for m in backbone_layers)
    assert decoder_layers
    assert all(m.group_size == 0 for m in decoder_layers)  # the decoder is outside DataParallel
