"""gptoss: gpt-oss from Hugging Face to a chat in a terminal."""

from converters import __version__

__all__ = ["__version__"]
