"""Trainer: fits BaseReward (Qwen2.5-VL + MLP reward head, Bradley-Terry loss) on built mixtures."""
