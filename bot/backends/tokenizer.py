"""Text to tokens for the embedded model: the chat template, the labels scored in one pass, the end token.
The vocabulary is read-only, so all of it is safe off the owner thread."""

from __future__ import annotations

import os
from typing import Any

from bot.errors import BackendError


class Tokenizer:
    """The model's tokenizer and chat template."""

    def __init__(self, model: Any, formatter: Any) -> None:
        self._model, self._formatter = model, formatter

    def tokens(self, text: str) -> list[int]:
        """`text` as tokens (no start token, no special tokens read)."""
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def single(self, text: str) -> int:
        """The one token `text` is (a label, the none word); a longer one cannot be scored in one pass."""
        tokens = self.tokens(text)
        if len(tokens) != 1:
            raise BackendError(f"{text!r} is {len(tokens)} tokens for this model; an extraction label must be one")
        return tokens[0]

    def end(self) -> int:
        """The token that ends an answer (end of turn, else end of text)."""
        import llama_cpp

        eot = llama_cpp.llama_vocab_eot(self._model.vocab)
        return int(eot if eot >= 0 else llama_cpp.llama_vocab_eos(self._model.vocab))

    def prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template applied to `messages`, ready for the assistant's answer, as tokens."""
        text = self._formatter(messages=messages).prompt
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def prefix(self, prefix: list[dict[str, str]]) -> list[int]:
        """The tokens every request starts with: the common part of two renderings of the chat template."""
        a = self.prompt(prefix + [{"role": "user", "content": "A"}])
        b = self.prompt(prefix + [{"role": "user", "content": "B"}])
        return list(os.path.commonprefix([a, b]))
