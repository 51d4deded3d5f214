"""The Typer commands, one module per command (`list_` and `eval_` for list and eval); each parses options and
calls one run_* function."""
