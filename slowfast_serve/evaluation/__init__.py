"""Evaluation-only data: never used for training or model selection."""
