"""RC, LBE, MIB, IP and noise as modules: shapes, values against hand computations, and behaviour."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mimcli.config import load_config, regularizer_section, regularizer_sections
from mimcli.data.batch import Batch
from mimcli.errors import UsageError
from mimcli.models.decoders import build_decoder
from mimcli.models.resnet import build_backbone
from mimcli.objectives.information import lbe_bound
from mimcli.regularizers import build_regularizer
from tests.tiny import TINY


@pytest.mark.parametrize(("size", "in_dim"), [(32, 512), (64, 512), (224, 2048)])
def test_decoder_output_matches_the_image(size, in_dim):
    decoder = build_decoder(in_dim, size).eval()
    assert decoder(torch.randn(2, in_dim)).shape == (2, 3, size, size)


def _layers(module: torch.nn.Module) -> list[tuple]:
    """Every leaf layer as (type, sizes..., has bias), in forward order."""
    out: list[tuple] = []
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            out.append(("Linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, torch.nn.ConvTranspose2d):
            out.append(("ConvT", m.in_channels, m.out_channels, m.stride[0], m.output_padding[0], m.bias is not None))
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            out.append(("BN", m.num_features))
        elif isinstance(m, torch.nn.ReLU):
            out.append(("ReLU",))
    return out


def _official(fc: tuple[int, int], convs: list[tuple[int, int, int, int]]) -> list[tuple]:
    """Transcription of the official ReCon32/64/224 (SimCLR/modules/recons.py): Linear(no bias) - BN1d -
    ReLU - reshape, then ConvT(no bias) - BN - ReLU per upsampling, then ConvT(-> 3, with bias)."""
    layers: list[tuple] = [("Linear", *fc, False), ("BN", fc[1]), ("ReLU",)]
    for c_in, c_out, stride, pad in convs[:-1]:
        layers += [("ConvT", c_in, c_out, stride, pad, False), ("BN", c_out), ("ReLU",)]
    return [*layers, ("ConvT", *convs[-1], True)]


@pytest.mark.parametrize(
    ("size", "in_dim", "expected"),
    [
        (32, 512, _official((512, 16 * 64), [(64, 256, 2, 1), (256, 128, 2, 1), (128, 64, 2, 1), (64, 3, 1, 0)])),
        (64, 512, _official((512, 16 * 128), [(128, 128, 2, 1)] * 4 + [(128, 3, 1, 0)])),
        (
            224,
            2048,
            _official(
                (2048, 49 * 64), [(64, 128, 2, 1), (128, 128, 2, 1), (128, 128, 2, 1), (128, 64, 2, 1), (64, 3, 2, 1)]
            ),
        ),
    ],
)
def test_reference_decoders_at_full_width(size, in_dim, expected):
    assert _layers(build_decoder(in_dim, size)) == expected


def test_rc_loss_is_the_mse_of_the_decoder_output():
    backbone = build_backbone("resnet18", 8, 32)
    rc = build_regularizer(regularizer_section(kind="rc"), backbone, 32, 2).eval()
    views = torch.randn(8, 3, 32, 32)
    features = backbone.eval()(views)
    reconstruction = rc.decoder(features["layer4"])
    expected = F.mse_loss(reconstruction[:4], views[:4]) + F.mse_loss(reconstruction[4:], views[4:])
    got = rc.loss(features, features, Batch(views, torch.zeros(4, dtype=torch.long), 2))["reg"]
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_few_steps_of_rc_alone_lower_the_reconstruction_error():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 8, 32)
    rc = build_regularizer(regularizer_section(kind="rc"), backbone, 32, 2)
    views = torch.rand(16, 3, 32, 32) * 2 - 1
    batch = Batch(views, torch.zeros(8, dtype=torch.long), 2)
    optimizer = torch.optim.Adam([*backbone.parameters(), *rc.parameters()], lr=1e-3)
    losses = []
    for _ in range(15):
        features = backbone(views)
        loss = rc.loss(features, features, batch)["reg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_maximising_the_lbe_bound_spreads_the_features():
    torch.manual_seed(0)
    points = (torch.randn(32, 8) * 0.1).requires_grad_()
    optimizer = torch.optim.SGD([points], lr=20.0)

    def mean_distance() -> float:
        return torch.pdist(points.detach()).mean().item()

    before = mean_distance()
    for _ in range(20):
        noisy = points + 0.1 * torch.randn_like(points)
        loss = -lbe_bound(noisy, points, rho=0.05)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert mean_distance() > 1.5 * before


def test_lbe_noise_only_in_training_and_only_on_its_blocks():
    backbone = build_backbone("resnet18", 8, 32)
    lbe = build_regularizer(regularizer_section(kind="lbe", sigma=0.1), backbone, 32, 2)
    features = {name: torch.zeros(4, dim) for name, dim in backbone.feature_dims.items()}
    noisy = lbe.train().perturb(features)
    for name in ("layer2", "layer3", "layer4"):
        assert 0.05 < noisy[name].std().item() < 0.2
    assert all(torch.equal(v, features[k]) for k, v in lbe.eval().perturb(features).items())


def test_noise_is_drawn_and_added_in_fp32_under_bf16_autocast():
    """As the official fp32 code: bf16 pooled features (what autocast returns) get fp32 noise, so none of it
    rounds away (in bf16, sigma 0.01 on values near 1 loses about a quarter, docs/fidelity.md)."""
    backbone = build_backbone("resnet18", 8, 32)
    lbe = build_regularizer(regularizer_section(kind="lbe", sigma=0.01), backbone, 32, 2).train()
    features = {name: torch.ones(64, dim, dtype=torch.bfloat16) for name, dim in backbone.feature_dims.items()}
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        noisy = lbe.perturb(features)
    torch.manual_seed(3)
    for name in ("layer2", "layer3", "layer4"):
        expected = torch.ones(64, features[name].shape[1]) + 0.01 * torch.randn(64, features[name].shape[1])
        assert noisy[name].dtype == torch.float32
        assert torch.equal(noisy[name], expected)


def test_lbe_term_is_minus_the_weighted_bound():
    backbone = build_backbone("resnet18", 8, 32)
    cfg = regularizer_section(kind="lbe", rho=0.05, block_weights={"layer2": 0.25, "layer3": 0.5, "layer4": 1.0})
    lbe = build_regularizer(cfg, backbone, 32, 2)
    torch.manual_seed(0)
    clean = {name: torch.randn(6, dim) for name, dim in backbone.feature_dims.items()}
    noisy = {name: value + 0.1 for name, value in clean.items()}
    terms = lbe.loss(clean, noisy, Batch(torch.zeros(6, 3, 32, 32), torch.zeros(3, dtype=torch.long), 2))
    expected = sum(w * lbe_bound(noisy[n], clean[n], 0.05) for n, w in cfg.block_weights.items())
    assert terms["reg"].item() == pytest.approx(-expected.item(), rel=1e-6)
    assert terms["mi_lbe"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("kind", sorted(regularizer_sections()))  # every registered one, a new one included
def test_every_regulariser_perturbs_in_training_only_and_returns_one_finite_term(kind):
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 8, 32)
    regularizer = build_regularizer(regularizer_section(kind=kind), backbone, 32, 2)
    clean = {name: torch.randn(4, dim) for name, dim in backbone.feature_dims.items()}
    batch = Batch(torch.randn(4, 3, 32, 32), torch.zeros(2, dtype=torch.long), 2)
    noisy = regularizer.train().perturb(clean)
    assert {name: t.shape for name, t in noisy.items()} == {name: t.shape for name, t in clean.items()}
    assert regularizer.eval().perturb(clean) is clean  # probes and evaluation see the clean features
    terms = regularizer.train().loss(clean, noisy, batch)
    assert terms["reg"].shape == ()
    assert torch.isfinite(terms["reg"])


@pytest.mark.parametrize("kind", ["mib", "ip"])
def test_mib_and_ip_are_the_element_mean_mse_between_views(kind):
    backbone = build_backbone("resnet18", 8, 32)
    regularizer = build_regularizer(regularizer_section(kind=kind), backbone, 32, 2)
    clean = {"layer4": torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 0.0], [2.0, 2.0]])}
    noisy = {"layer4": clean["layer4"] + 5.0}  # must be ignored: the term uses the clean features
    batch = Batch(torch.zeros(4, 3, 32, 32), torch.zeros(2, dtype=torch.long), 2)
    assert regularizer.loss(clean, noisy, batch)["reg"].item() == pytest.approx((4 + 8) / 4)


def test_noise_regularisers_perturb_only_h():
    backbone = build_backbone("resnet18", 8, 32)
    for kind in ("mib", "noise"):
        regularizer = build_regularizer(regularizer_section(kind=kind), backbone, 32, 2).train()
        features = {name: torch.zeros(4, dim) for name, dim in backbone.feature_dims.items()}
        noisy = regularizer.perturb(features)
        assert noisy["layer4"].abs().sum() > 0
        assert torch.equal(noisy["layer2"], features["layer2"])
        assert torch.equal(noisy["layer3"], features["layer3"])
    ip = build_regularizer(regularizer_section(kind="ip"), backbone, 32, 2).train()
    assert ip.perturb(features) is features


def test_lbe_naming_a_missing_block_is_a_usage_error():
    backbone = build_backbone("resnet18", 8, 32)
    with pytest.raises(UsageError, match="layer5"):
        build_regularizer(regularizer_section(kind="lbe", block_weights={"layer5": 1.0}), backbone, 32, 2)


def test_lbe_on_layer4_only_for_imagenet_models():
    config = load_config(None, ["regularizer.kind='lbe'", "regularizer.block_weights={layer4 = 1.0}"])
    backbone = build_backbone("resnet18", 8, 32)
    lbe = build_regularizer(config.regularizer, backbone, 32, 2)
    assert lbe.noisy_blocks == ("layer4",)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--set", "regularizer.lambda=-0.5"], "regularizer.lambda"),
        (["--set", "regularizer.sigma=-1"], "regularizer.sigma"),
        (["--set", "regularizer.kind='lbe'", "--set", "regularizer.block_weights={layer9 = 1.0}"], "layer9"),
        (["--set", "regularizer.kind='rc'", "--set", "data.image_size=48"], "RC decoder serves only"),
    ],
)
def test_regulariser_bad_input_is_one_line_exit_2(cli, tmp_path, extra, fragment):
    code, _, err = cli("pretrain", *TINY, *extra, "--out", str(tmp_path / "run"))
    assert code == 2
    assert fragment in err
    assert err.strip().count("\n") == 0
