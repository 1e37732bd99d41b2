"""Test-only reference environments and runners for MMAction2, PaddleVideo and PySlowFast (see reference.py)."""
