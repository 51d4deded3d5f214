"""`gptoss serve`: gpt-oss behind an OpenAI-compatible HTTP API (chat completions and Responses)."""
