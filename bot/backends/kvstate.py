"""The prefix's KV state on disk: one sequence's cells (no logits), keyed by model, context layout and tokens."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_MAGIC = b"GABKV1\0\0"
KEEP = 3  # other prefixes kept on disk beside the known ones (e.g. another model, an older content)


def cache_path(cache_dir: Path, identity: Iterable[str], tokens: list[int]) -> Path:
    """Where the state of `tokens` under this model and context layout (`identity`) is kept."""
    h = hashlib.sha256()
    for part in (*identity, str(len(tokens))):
        h.update(part.encode() + b"\0")
    h.update(struct.pack(f"<{len(tokens)}i", *tokens))
    return cache_dir / f"prefix-{h.hexdigest()[:20]}.kv"


def save(ctx: Any, seq: int, path: Path, tokens: list[int], keep: set[Path] | frozenset[Path] = frozenset()) -> None:
    """Write sequence `seq`'s KV cells (the public save_state would also copy 300+ MB of logits); of the other
    files only `keep` (the prefixes this process knows: every group of its content) and the newest few stay."""
    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(ctx, seq)
    buf = (ctypes.c_uint8 * size)()
    n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, seq)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(_MAGIC + struct.pack("<QQ", len(tokens), n))
        f.write(struct.pack(f"<{len(tokens)}i", *tokens))
        f.write(memoryview(buf)[:n])
    os.replace(tmp, path)
    prune(path.parent, {*keep, path})
    log.info("saved prefix KV state: %s (%.1f MB)", path.name, n / 1e6)


def prune(folder: Path, keep: set[Path]) -> None:
    """Delete prefix files beyond `keep` and the KEEP newest others."""
    others = [p for p in folder.glob("prefix-*.kv") if p not in keep]
    for old in sorted(others, key=lambda p: p.stat().st_mtime)[:-KEEP]:
        old.unlink(missing_ok=True)


def restore(ctx: Any, seq: int, path: Path, tokens: list[int]) -> bool:
    """Load the saved cells of exactly `tokens` into sequence `seq`; False when absent, stale or unreadable."""
    import llama_cpp

    try:
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            return False
        count, n = struct.unpack_from("<QQ", data, len(_MAGIC))
        off = len(_MAGIC) + 16
        saved = list(struct.unpack_from(f"<{count}i", data, off))
        off += 4 * count
        if saved != tokens or len(data) - off != n:
            return False
        buf = (ctypes.c_uint8 * n).from_buffer_copy(data, off)
        return bool(llama_cpp.llama_state_seq_set_data(ctx, buf, n, seq) == n)
    except (OSError, struct.error) as exc:
        log.warning("prefix cache %s unreadable (%s); computing it", path, exc)
        return False
