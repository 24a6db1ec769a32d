"""The smallest network and data set every CPU test trains on, as `--set` keys and as `mim` options.

Plain data, imported by the test modules that build on it (`from tests.tiny import TINY_KEYS`): module-level
parameter lists need them at collection time, where a fixture cannot reach. Everything with behaviour (a
console, a thread count, generated data) is a fixture in conftest.py instead, which nothing imports.
"""

from __future__ import annotations

# fp32: precision=auto would pick bf16 on AMX/AVX512-BF16 CPUs only, and a test's numbers must not depend on
# the CPU.
TINY_BASE = [
    "model.width=8",
    "data.dataset=shapes",
    "data.shapes.n_train=64",
    "data.shapes.n_test=32",
    "train.precision=fp32",
]
# One short training, no probes: what most tests run; a test file adds the keys it varies after these
# (a later --set of the same key wins).
TINY_KEYS = [*TINY_BASE, "train.batch_size=32", "train.epochs=1", "probe.datasets=[]"]
# The same as `mim` command-line options.
TINY = [*(arg for key in TINY_KEYS for arg in ("--set", key)), "--no-progress"]
