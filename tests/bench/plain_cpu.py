"""`gptoss` with llama.cpp's extra CPU buffer types off (no CPU_REPACK), the kernels an RPC worker's CPU device
runs: the rpc bench's reference for what greedy text over workers must equal.

    python -m tests.bench.plain_cpu chat MODEL.gguf -p ... (any gptoss arguments)
"""

import sys

import llama_cpp as lc

_default_params = lc.llama_model_default_params


def _plain_params():
    params = _default_params()
    params.use_extra_bufts = False
    return params


if __name__ == "__main__":
    lc.llama_model_default_params = _plain_params
    from gptoss_cli.cli import main

    sys.argv = ["gptoss", *sys.argv[1:]]
    main()
