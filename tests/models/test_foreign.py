"""`mim probe` on models mim did not train: each checkpoint layout is written here from a small
torchvision ResNet, probed through the CLI, and its cached features compared with the same weights run
by hand; torchvision random weights; bad files get one line and exit 2; the report lists such a model
beside mim's runs; the information diagnostics measure it as they measure a run."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import h5py
import pytest
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from mimcli.config import ShapesSection
from mimcli.data.augment import BatchAugment
from mimcli.data.source import load_train_data
from mimcli.data.transfer import resolve_dataset
from mimcli.models.resnet import PooledResNet, _resnet_stages
from mimcli.rundir import runs
from mimcli.train.diagnostics import Diagnostics
from tests.tiny import TINY

SHAPES = ["--set", "data.shapes.n_train=64", "--set", "data.shapes.n_test=32"]
PROBE = ["--datasets", "shapes:shape", "--protocol", "knn", *SHAPES]


def small_resnet(stem: str, padding: int = 1) -> ResNet:
    """A torchvision ResNet-18 of width 8: the ImageNet stem, or a 3x3 stride-1 stem without max-pool."""
    torch.manual_seed(1)
    net = _resnet_stages(BasicBlock, [2, 2, 2, 2], 8)
    net.avgpool, net.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(64, 10)  # torchvision's last children
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 8, kernel_size=3, stride=1, padding=padding, bias=False)
        net.maxpool = nn.Identity()  # type: ignore[assignment]
    for module in net.modules():  # running statistics that are not 0 and 1, so BatchNorm is exercised
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def by_hand(net: ResNet, images: Tensor) -> dict[str, Tensor]:
    """Pooled layer2/3/4 of uint8 images, normalised with the shapes probes' (0.5, 0.5)."""
    x = (images.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        x = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))
        out = {}
        for name in ("layer2", "layer3", "layer4"):
            x = getattr(net, name)(x)
            out[name] = x.mean(dim=(2, 3))
    return out


def shapes_train_images() -> Tensor:
    dataset = resolve_dataset("shapes:shape", root=".", image_size=32, shapes=ShapesSection(n_train=64, n_test=32))
    return dataset.load()[0].images


def cached(out: Path) -> dict[str, Tensor]:
    (path,) = (out / "features").glob("shapes-*-train-*.h5")
    with h5py.File(path, "r") as handle:
        return {name: torch.from_numpy(handle[name][...]) for name in ("layer2", "layer3", "layer4")}


def assert_same_features(out: Path, expected: dict[str, Tensor]) -> None:
    """fp32 both ways, but not the same kernels: the probe encodes in batches of 512 through our PooledResNet,
    the reference runs the whole set through the other code base's module at once, so oneDNN may pick another
    convolution algorithm and sum in another order (a few fp32 ulps per layer, ~1e-6 relative after a ResNet).
    1e-4 is far above that and far below any wrong key mapping, which changes features by tens of percent."""
    got = cached(out)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5)


def solo_learn(net: ResNet) -> dict:
    """A solo-learn Lightning checkpoint: backbone.*, its online classifier and projector, training counters."""
    state = {f"backbone.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state |= {"classifier.weight": torch.randn(10, 64), "classifier.bias": torch.zeros(10)}
    state |= {"projector.0.weight": torch.randn(32, 64), "projector.0.bias": torch.zeros(32)}
    return {"state_dict": state, "epoch": 3, "global_step": 120}


def lightly(net: ResNet) -> dict:
    """lightly's examples: backbone = nn.Sequential(*list(resnet.children())[:-1]) beside a projection head."""
    backbone = nn.Sequential(*list(net.children())[:-1])
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    return state | {"projection_head.layers.0.weight": torch.randn(32, 64)}


def infocl(net: ResNet) -> dict:
    """The official code's SimCLR state_dict: encoder.* with shortcut / shortcut_bn, projector.*."""
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("fc."):
            continue
        key = key.replace(".downsample.0.", ".shortcut.0.").replace(".downsample.1.", ".shortcut_bn.")
        state[f"encoder.{key}"] = value
    return state | {"projector.0.weight": torch.randn(64, 64), "projector.2.weight": torch.randn(16, 64)}


def infocl_imagenet(net: ResNet) -> dict:
    """The official ImageNet ResNet's names: ds_conv1 / ds_bn1."""
    state = {}
    for key, value in net.state_dict().items():
        if not key.startswith("fc."):
            key = key.replace(".downsample.0.", ".ds_conv1.").replace(".downsample.1.", ".ds_bn1.")
            state[f"encoder.{key}"] = value
    return state


LAYOUTS = {
    "solo-learn": ("cifar", 2, solo_learn),
    "lightly": ("imagenet", 1, lightly),
    "infocl": ("cifar", 1, infocl),
    "infocl-imagenet": ("imagenet", 1, infocl_imagenet),
    "torchvision": ("imagenet", 1, lambda net: net.state_dict()),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_gives_the_features_of_its_weights(cli, tmp_path, layout):
    stem, padding, save = LAYOUTS[layout]
    net = small_resnet(stem, padding)
    torch.save(save(net), tmp_path / "model.ckpt")
    out = tmp_path / "probe"
    code, _, err = cli("probe", str(tmp_path / "model.ckpt"), "--out", str(out), *PROBE)
    assert code == 0, err
    description = json.loads((out / "model.json").read_text())["model"]
    assert description["checkpoint"]["format"] == layout.split("-imagenet")[0]
    assert description["architecture"]["arch"] == "resnet18"
    assert description["architecture"]["width"] == 8
    assert_same_features(out, by_hand(net, shapes_train_images()))
    record = json.loads((out / runs.PROBE).read_text())["results"][0]
    assert record["params"]["preprocessing"]["input_size"] == 32
    assert record["params"]["preprocessing"]["feature_layers"] == ["layer2", "layer3", "layer4"]


def test_our_own_backbone_probed_as_a_file_equals_the_run_probe(cli, tmp_path):
    """A run's backbone.pt probed as a foreign file gives the run's own features and accuracy; the report
    lists both, the foreign one labelled by what it is."""
    run = tmp_path / "runs" / "simclr"
    assert cli("pretrain", *TINY, "--set", "train.diagnostics_every=0", "--out", str(run))[0] == 0
    assert cli("probe", str(run), "--datasets", "shapes:shape", "--protocol", "knn")[0] == 0
    out = tmp_path / "runs" / "file"
    code, _, err = cli("probe", str(run / runs.BACKBONE), "--out", str(out), *PROBE)
    assert code == 0, err
    ours = json.loads((run / runs.PROBE).read_text())["results"][0]["metrics"]["acc"]
    theirs = json.loads((out / runs.PROBE).read_text())["results"][0]["metrics"]["acc"]
    assert theirs == ours
    assert_same_features(out, cached(run))
    code, text, err = cli("report", str(tmp_path / "runs"), "--format", "json")
    assert code == 0, err
    rows = {row["model"]: row for row in json.loads(text) if row["task"] != "information"}
    assert set(rows) == {"SimCLR", "mim resnet18 (backbone.pt)"}
    assert rows["mim resnet18 (backbone.pt)"]["method"] == "foreign:checkpoint"
    assert rows["mim resnet18 (backbone.pt)"]["value"] == rows["SimCLR"]["value"]
    # a foreign row is another model by design: mim's rows are not marked as trained differently
    code, text, err = cli("report", str(tmp_path / "runs"), "--format", "markdown")
    assert code == 0
    assert "different protocols" not in err
    assert "SimCLR†" not in text
    assert "| mim resnet18 (backbone.pt) |" in text.replace(" †", "")


def test_torchvision_random_weights_offline(cli, tmp_path):
    out = tmp_path / "tv"
    code, _, err = cli("probe", "torchvision:resnet18", "--out", str(out), *PROBE)
    assert code == 0, err
    torch.manual_seed(0)  # --seed's default
    from torchvision.models import resnet18

    assert_same_features(out, by_hand(resnet18().eval(), shapes_train_images()))
    description = json.loads((out / "model.json").read_text())["model"]
    assert description["label"] == "torchvision resnet18 (random init)"
    assert description["normalization"] is None
    # probed again from the directory alone: the cache is read, nothing rebuilt
    before = cached(out)
    code, _, err = cli("probe", str(out), "--datasets", "shapes:shape,shapes:hue", "--protocol", "knn")
    assert code == 0, err
    results = json.loads((out / runs.PROBE).read_text())["results"]
    assert [r["dataset"] for r in results] == ["shapes:shape", "shapes:hue"]
    torch.testing.assert_close(cached(out)["layer4"], before["layer4"], rtol=0, atol=0)


def test_weights_that_need_a_download_fail_in_one_line_offline(cli, tmp_path, monkeypatch):
    import torchvision.models._api as api

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    code, out, err = cli("probe", "torchvision:resnet18:IMAGENET1K_V1", "--out", str(tmp_path / "tv"), *PROBE)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "could not be downloaded" in err
    assert "resnet18-f37072fd.pth" in err
    assert not (tmp_path / "tv").exists()


class Hyper:
    """Stands for the config objects a Lightning checkpoint pickles beside its tensors."""

    lr = 0.1


def test_unknown_ambiguous_and_pickled_checkpoints_get_one_line(cli, tmp_path):
    net = small_resnet("cifar", 2)
    torch.save({"head.weight": torch.randn(3, 3)}, tmp_path / "unknown.pt")
    code, _, err = cli("probe", str(tmp_path / "unknown.pt"), *PROBE)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "cannot tell which code base wrote" in err
    assert "--format" in err
    # solo-learn's keys without its classifier are any code base's backbone.*: the format is asked for
    plain = {k: v for k, v in solo_learn(net)["state_dict"].items() if k.startswith("backbone.")}
    torch.save(plain, tmp_path / "ambiguous.pt")
    code, _, err = cli("probe", str(tmp_path / "ambiguous.pt"), *PROBE)
    assert code == 2
    assert "--format" in err
    out = tmp_path / "asked"
    code, _, err = cli("probe", str(tmp_path / "ambiguous.pt"), "--format", "solo-learn", "--out", str(out), *PROBE)
    assert code == 0, err
    assert_same_features(out, by_hand(net, shapes_train_images()))
    torch.save({"state_dict": solo_learn(net)["state_dict"], "hyper_parameters": Hyper()}, tmp_path / "pickled.ckpt")
    code, _, err = cli("probe", str(tmp_path / "pickled.ckpt"), *PROBE)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "needs pickle" in err
    assert "weights_only=False" in err
    assert "torch.save" in err
    # a probe directory keeps the model it was written for
    code, _, err = cli("probe", str(out), "--pool", "max", *PROBE)
    assert code == 2
    assert "model.json" in err


def test_information_diagnostics_of_a_foreign_backbone(cli, tmp_path):
    net = PooledResNet("resnet18", 8, "cifar").eval()
    torch.save(net.state_dict(), tmp_path / "ours.pt")
    out = tmp_path / "probe"
    code, _, err = cli("probe", str(tmp_path / "ours.pt"), "--out", str(out), "--info", *PROBE)
    assert code == 0, err
    (line,) = runs.read_metrics(out)
    config = runs.load_run_config(out)
    assert config.data.dataset == "shapes"
    assert config.data.shapes.n_train == 64
    config = config.model_copy(update={"train": config.train.model_copy(update={"diagnostics_every": 1})})
    data = load_train_data(config)
    diagnostics = Diagnostics.build(config, data, BatchAugment(config.augment, 32), torch.device("cpu"))
    assert diagnostics is not None
    expected = diagnostics.measure(net, 0)["info"]
    assert set(line["info"]) == set(expected)
    for key in ("z_v_renyi", "z1_z2_renyi", "z_shape_renyi", "z_hue_renyi", "z_position_renyi", "z_v_ksg"):
        assert line["info"][key] == pytest.approx(expected[key], rel=1e-6)


def test_torchvision_options_are_recorded(cli, tmp_path):
    out = tmp_path / "tv"
    code, _, err = cli(
        "probe",
        "torchvision:resnet18",
        "--out",
        str(out),
        "--pool",
        "max",
        "--input-size",
        "40",
        "--norm",
        "imagenet",
        "--feature-layers",
        "layer1,layer3,layer4",
        *PROBE,
    )
    assert code == 0, err
    record = json.loads((out / runs.PROBE).read_text())["results"][0]
    pre = record["params"]["preprocessing"]
    assert pre["pool"] == "max"
    assert pre["input_size"] == 40
    assert pre["feature_layers"] == ["layer1", "layer3", "layer4"]
    assert pre["normalization"]["mean"] == [0.485, 0.456, 0.406]
    (path,) = (out / "features").glob("shapes-*-train-40px-*.h5")
    with h5py.File(path, "r") as handle:
        assert handle["layer2"].shape == (64, 64)  # layer1's 64 channels in the first slot
        assert handle.attrs["norm"] == "the model's own constants"
        assert list(handle.attrs["norm_std"]) == pytest.approx([0.229, 0.224, 0.225])


def test_timm_model_with_its_own_config(cli, tmp_path):
    timm = pytest.importorskip("timm")
    out = tmp_path / "timm"
    code, _, err = cli("probe", "timm:resnet18", "--out", str(out), "--input-size", "32", *PROBE)
    assert code == 0, err
    description = json.loads((out / "model.json").read_text())["model"]
    assert description["feature_layers"] == ["layer2", "layer3", "layer4"]  # the last three of its feature_info
    assert description["normalization"]["from"] == "timm pretrained_cfg"
    mean, std = description["pretrained_cfg"]["mean"], description["pretrained_cfg"]["std"]
    torch.manual_seed(0)
    model = timm.create_model("resnet18").eval()
    x = (shapes_train_images().float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.forward_features(x).mean(dim=(2, 3))
    torch.testing.assert_close(cached(out)["layer4"], expected, rtol=1e-4, atol=1e-5)


def test_timm_missing_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # import timm raises ImportError
    code, _, err = cli("probe", "timm:resnet18", "--out", str(tmp_path / "t"), *PROBE)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "pip install timm" in err
