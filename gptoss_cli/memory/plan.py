"""The old name of memory/placement.py, kept only for tests/test_backend.py's import of swa_cells; import
gptoss_cli.memory.placement instead."""

from gptoss_cli.memory.placement import swa_cells

__all__ = ["swa_cells"]
