"""gptoss converters: gpt-oss safetensors -> GGUF as a library (no CLI, no printing)."""

__version__ = "0.1.0"
