"""Curation: read public preference sets, normalize them into canonical pairs, build mixtures."""

__version__ = "0.1.0"
