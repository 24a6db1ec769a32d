"""`mim sweep`: a grid of runs, each a normal run directory (see docs/sweeps.md)."""

from mimcli.sweep.execute import *  # noqa: F403  (the next commit names what each module exports)
