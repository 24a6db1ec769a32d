"""RC decoders: reconstruct the normalised augmented view from the pooled layer4 vector h.

Architectures follow the paper's reference code (docs/reference.md#rc-decoders): one per input
resolution. No output activation: the target lies in [-1, 1] after Normalize(0.5, 0.5).
`width_scale` (model.width / 64) narrows every hidden channel count with the backbone, so a
width-16 network is not dominated by a full-size decoder; at width 64 the decoders are exactly the
reference ones.
"""

from __future__ import annotations

from itertools import pairwise

from torch import Tensor, nn

SUPPORTED_SIZES = frozenset({32, 64, 224})


def _up(c_in: int, c_out: int, bias: bool = False) -> list[nn.Module]:
    """ConvTranspose k3 s2 p1 op1 (doubles the side) + BN + ReLU."""
    return [
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class Decoder(nn.Module):
    """Linear to a small feature map, then transposed convolutions up to the image side."""

    def __init__(self, fc: nn.Module, shape: tuple[int, int, int], convs: nn.Sequential) -> None:
        super().__init__()
        self.fc, self.shape, self.convs = fc, shape, convs

    def forward(self, h: Tensor) -> Tensor:
        image: Tensor = self.convs(self.fc(h).view(h.shape[0], *self.shape))
        return image


def _fc(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear (no bias) - BN1d - ReLU: the official ReCon32/64/224 all open with it."""
    return nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))


def build_decoder(in_dim: int, image_size: int, width_scale: float = 1.0) -> Decoder:
    def c(channels: int) -> int:
        return max(8, round(channels * width_scale))

    if image_size == 32:
        fc = _fc(in_dim, c(64) * 16)
        convs = nn.Sequential(
            *_up(c(64), c(256)), *_up(c(256), c(128)), *_up(c(128), c(64)), nn.ConvTranspose2d(c(64), 3, 3, 1, 1)
        )
        return Decoder(fc, (c(64), 4, 4), convs)
    if image_size == 64:
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += _up(c(128), c(128))
        convs = nn.Sequential(*layers, nn.ConvTranspose2d(c(128), 3, 3, 1, 1))
        return Decoder(_fc(in_dim, c(128) * 16), (c(128), 4, 4), convs)
    if image_size == 224:
        chans = [c(x) for x in (64, 128, 128, 128, 64)]
        layers = []
        for c_in, c_out in pairwise(chans):
            layers += _up(c_in, c_out)
        convs = nn.Sequential(*layers, nn.ConvTranspose2d(chans[-1], 3, 3, 2, 1, output_padding=1))
        return Decoder(_fc(in_dim, chans[0] * 49), (chans[0], 7, 7), convs)
    raise ValueError(f"the RC decoder serves only {sorted(SUPPORTED_SIZES)} px, not {image_size}")
