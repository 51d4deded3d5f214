"""Devices, model shapes and the memory planner (`gptoss plan`, `--fit`)."""
