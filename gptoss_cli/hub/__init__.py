"""Hugging Face Hub: `gptoss pull`, `list`, `rm`."""
