"""`gptoss chat`: one-shot runs and the REPL."""
