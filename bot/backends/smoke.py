"""Decode one token in a subprocess: `make setup` runs this to catch a build the CPU cannot execute."""

from __future__ import annotations

import sys


def smoke(model_path: str) -> int:
    """Decode one token; setup runs this in a subprocess to catch builds the CPU cannot execute."""
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, n_ctx=128, n_threads=2, verbose=False)
    out = llm.create_completion("1, 2, 3,", max_tokens=1, temperature=0)
    print("smoke ok:", repr(out["choices"][0]["text"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(smoke(sys.argv[1]))
