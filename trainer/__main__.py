"""`python -m trainer` (what `torchrun` launches)."""

from trainer.cli import main

main()
