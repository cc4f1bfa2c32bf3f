"""A self-hosted, grounded article chatbot on a local llama.cpp model."""

__version__ = "0.1.0"
