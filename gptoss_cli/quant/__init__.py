"""Making and checking GGUFs: `gptoss quantize`, `recipes`, `imatrix`, `eval`, `info`."""
