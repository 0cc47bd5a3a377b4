"""heylook: Hugging Face models behind the OpenAI and Ollama APIs."""

__version__ = "0.1.0"
