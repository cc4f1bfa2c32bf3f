# `make run`: set up (first time: ~10 min) and chat with the bot in the terminal.
# `make test`: set up if needed (and headless Chromium for the log page test) and run the whole test suite,
# real-model tests included.
# `make bench`: build llama.cpp's own tools once, then measure speed (bench/bench.json, bench/bench.png).
.PHONY: setup run test lint bench

setup:
	@bash scripts/setup.sh

run: setup
	@.venv/bin/bot chat

test: setup
	@bash scripts/test-deps.sh
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check bot tests

bench: setup
	.venv/bin/bot bench --llama-tools "$$(bash scripts/llama-tools.sh)"
