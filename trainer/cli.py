"""`trainer`: the reward-model trainer's command line (`fit`, `eval`, `score` arrive with the trainer)."""

from __future__ import annotations

import importlib.metadata
import platform

import typer

app = typer.Typer(help="Train and evaluate BaseReward reward models.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Train and evaluate BaseReward reward models."""


@app.command()
def env() -> None:
    """Report what the trainer can use here: Python, torch, transformers and the accelerators."""
    typer.echo(f"python {platform.python_version()} on {platform.machine()}")
    for package in ("torch", "transformers", "accelerate"):
        try:
            typer.echo(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            typer.echo(f"{package} not installed")
    try:
        import torch
    except ImportError:
        return
    typer.echo(f"cuda available: {torch.cuda.is_available()}")
    for i in range(torch.cuda.device_count()):
        typer.echo(f"  cuda:{i} {torch.cuda.get_device_name(i)}")


def main() -> None:
    app()
