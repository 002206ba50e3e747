"""The shipped training settings file loads and says what the paper states."""

from pathlib import Path

from trainer.config import load_config

SETTINGS = Path(__file__).resolve().parents[2] / "settings" / "basereward-7b.yaml"


def test_the_basereward_settings_load() -> None:
    config = load_config(SETTINGS, {"micro_batch": 2})
    assert (config.lr, config.global_batch, config.head_layers, config.head_activation) == (3e-6, 128, 2, "silu")
    assert not config.use_margin and config.micro_batch == 2  # a flag overrides the file
