"""Probes on cached frozen features (see docs/probing.md)."""

from mimcli.probe.run import *  # noqa: F403  (the next commit names what each module exports)
