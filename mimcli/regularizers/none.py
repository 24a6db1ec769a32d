"""No regulariser: the method alone (lambda and sigma do nothing)."""

from __future__ import annotations

from typing import Literal

from mimcli.config import RegularizerSection
from mimcli.regularizers.base import Regularizer, register_regularizer


class NoneSection(RegularizerSection):
    kind: Literal["none"] = "none"
    label = ""
    uses = ()


class NoRegularizer(Regularizer):
    Section = NoneSection


register_regularizer(NoRegularizer)
