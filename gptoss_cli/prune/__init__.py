"""`gptoss prune`: drop the experts a calibration text routes least to (REAP) from a gpt-oss GGUF."""
