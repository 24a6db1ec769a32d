"""The one in-memory image type every loader returns, in its own module so that the loaders
(datasets.py) and the generators they call (shapes.py) both import it without a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ImageData:
    """uint8 images (N, 3, H, W), integer labels (-1 where unlabeled) and optional extra targets."""

    images: Tensor
    labels: Tensor
    classes: list[str]
    targets: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, index: Tensor) -> ImageData:
        return ImageData(
            self.images[index], self.labels[index], self.classes, {k: v[index] for k, v in self.targets.items()}
        )
