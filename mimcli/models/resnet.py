"""ResNet-18/34/50/101/152 backbones that return the global-average-pooled outputs of layer2, layer3 and layer4.

torchvision's ResNet supplies the blocks; only the stem changes (CIFAR: 3x3 stride 1, no max-pool;
STL-10: 3x3 stride 2, no max-pool; ImageNet: the standard 7x7 + max-pool). `width` scales every
stage so the same code runs in seconds on a CPU with 16 base channels. Training offers ResNet-18 and
-50 (model.backbone); the other depths are here for checkpoints trained elsewhere (mim probe).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

BLOCKS = ("layer2", "layer3", "layer4")
Stem = Literal["cifar", "stl", "imagenet"]

_SPECS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


def stem_for(image_size: int, stem: str = "auto") -> Stem:
    """The paper's stem for an input resolution: CIFAR below 64 px, STL at 64-95 px, ImageNet above."""
    if stem != "auto":
        return stem  # type: ignore[return-value]
    if image_size < 64:
        return "cifar"
    if image_size < 96:
        return "stl"
    return "imagenet"


class PooledResNet(nn.Module):
    """ResNet trunk; forward(x) -> {"layer2": (B, C2), "layer3": (B, C3), "layer4": (B, C4)}."""

    def __init__(self, arch: str = "resnet18", width: int = 64, stem: Stem = "cifar") -> None:
        super().__init__()
        if arch not in _SPECS:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {sorted(_SPECS)}")
        block, layers = _SPECS[arch]
        net = _resnet_stages(block, layers, width)
        if stem == "imagenet":
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            # the official resnet_imagenet.py draws its convolutions from N(0, 2 / (k * k * out_channels))
            for module in net.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        else:
            stride = 1 if stem == "cifar" else 2
            conv = nn.Conv2d(3, width, kernel_size=3, stride=stride, padding=1, bias=False)
            self.stem = nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if block is Bottleneck else 1
        self.feature_dims = {
            "layer2": 2 * width * expansion,
            "layer3": 4 * width * expansion,
            "layer4": 8 * width * expansion,
        }
        self.arch, self.width, self.stem_kind = arch, width, stem

    @property
    def out_dim(self) -> int:
        return self.feature_dims["layer4"]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.layer1(self.stem(x))
        l2 = self.layer2(x)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return {
            name: torch.flatten(nn.functional.adaptive_avg_pool2d(t, 1), 1) for name, t in zip(BLOCKS, (l2, l3, l4))
        }


def _resnet_stages(block: type[nn.Module], layers: list[int], width: int) -> ResNet:
    """torchvision ResNet whose stages have width, 2w, 4w, 8w channels (64 gives the standard network)."""
    net = ResNet.__new__(ResNet)
    nn.Module.__init__(net)
    net._norm_layer = nn.BatchNorm2d
    net.inplanes = width
    net.dilation = 1
    net.groups = 1
    net.base_width = 64
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    net.layer1 = net._make_layer(block, width, layers[0])
    net.layer2 = net._make_layer(block, 2 * width, layers[1], stride=2)
    net.layer3 = net._make_layer(block, 4 * width, layers[2], stride=2)
    net.layer4 = net._make_layer(block, 8 * width, layers[3], stride=2)
    # Convolutions keep PyTorch's default init (kaiming_uniform, a=sqrt(5)), as the official CIFAR /
    # STL-10 ResNet (modules/resnet.py) does; the ImageNet stem re-draws them (PooledResNet).
    return net


def build_backbone(arch: str, width: int, image_size: int, stem: str = "auto") -> PooledResNet:
    return PooledResNet(arch, width, stem_for(image_size, stem))
