"""The Typer commands, grouped as `gptoss --help` lists them; each parses options and calls one run_* function."""
