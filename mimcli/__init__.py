"""mim: pretrain, probe and report self-supervised representations with and without I(z, v) regularisers."""

__version__ = "0.1.0"
DISTRIBUTION = "mim-ssl"  # the name on the package index (pyproject.toml); `mim --version` prints it
