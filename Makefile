# `make run`: set up (first time: ~10 min) and chat with the bot in the terminal.
# `make test`: set up if needed and run the whole test suite, real-model tests included.
.PHONY: setup run test lint

setup:
	@bash scripts/setup.sh

run: setup
	@.venv/bin/bot chat

test: setup
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check bot tests
