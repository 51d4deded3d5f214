"""The llama.cpp engine that chat and serve share: model loading, decoding, harmony, the chat session."""
