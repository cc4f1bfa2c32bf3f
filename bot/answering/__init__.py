"""Answering: the engine, its prompts, the extractive path and its decision, the checked release."""
