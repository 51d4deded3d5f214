"""gpt-oss past one machine: `gptoss worker` and `--rpc`, on llama.cpp's RPC backend (ggml-rpc)."""
