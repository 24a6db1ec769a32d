"""The method API the training loop calls, and the registry each method module adds itself to.

A method receives the (possibly regulariser-perturbed) pooled features of all views, stacked view
by view ([v1; v2]), and returns its loss terms. Per-step side effects (BYOL's EMA target) live in
`on_step_end`, which every method has, so the loop needs no method-specific branch. docs/extending.md
shows how to add one.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

from pydantic import Field
from torch import Tensor, nn

from mimcli.config import (
    METHOD_SECTIONS,
    MethodSection,
    method_sections,
    register_section,
)
from mimcli.data.batch import Batch
from mimcli.models.resnet import PooledResNet


class ProjectorSection(MethodSection):
    """Keys of the methods that put an MLP projector on the pooled features (SimCLR, BYOL, Barlow Twins)."""

    hidden_dim: int | None = Field(
        None,
        gt=0,
        description="Projector hidden width (default: the backbone's feature width, 512 ResNet-18 / 2048 ResNet-50, "
        "as the official heads).",
    )
    proj_dim: int | None = Field(None, gt=0, description="Projector output (default 128; 1024 for Barlow).")


class Method(nn.Module):
    """Heads + loss. Subclasses set `Section` (their config section) and take (section, backbone, classes)."""

    Section: ClassVar[type[MethodSection]]
    n_views: int = 2
    needs_labels: bool = False
    # Under DDP, BatchNorm over the global batch (SyncBatchNorm) instead of each rank's share: the
    # self-supervised methods then train as one process with the global batch would (and SimCLR's
    # BN cannot leak which samples sit together on a device); supervised keeps per-rank statistics.
    sync_batchnorm: bool = True
    # An EMA target's base momentum (BYOL); the loop turns it into each step's momentum
    # (mimcli.train.schedules.target_momentum) and passes that to on_step_end. 1: no target.
    base_momentum: float = 1.0

    def __init__(self, cfg: MethodSection, backbone: PooledResNet, num_classes: int) -> None:
        super().__init__()

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Return {"method": scalar loss, ...other terms to log}."""
        raise NotImplementedError

    def on_step_end(self, backbone: nn.Module, momentum: float) -> None:
        """Called after every optimiser step with this step's target momentum; most methods do nothing."""


METHODS: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register_method(method: M) -> M:
    """The one line a method module ends with: its section becomes selectable as method.name, its class buildable."""
    name = register_section(METHOD_SECTIONS, "name", method.Section, "method")
    METHODS[name] = method
    return method


def build_method(cfg: MethodSection, backbone: PooledResNet, num_classes: int) -> Method:
    method_sections()  # the built-ins are registered
    return METHODS[cfg.name](cfg, backbone, num_classes)
