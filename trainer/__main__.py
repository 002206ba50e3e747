"""`python -m trainer` (what `torchrun` launches): the `trainer` console script, Ctrl-C handled the same way."""

from curation.entry import trainer

trainer()
