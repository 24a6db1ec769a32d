"""`python -m mimcli` (what `torchrun -m mimcli` runs)."""

from mimcli.cli import main

main()
