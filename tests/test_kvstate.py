"""Prefix files: their names change with the model, the context layout or the tokens; pruning keeps the
files of the content being served (every group) and a few others."""

from __future__ import annotations

import os
from pathlib import Path

from bot.backends import kvstate


def test_the_cache_name_follows_model_layout_and_tokens(tmp_path: Path) -> None:
    base = kvstate.cache_path(tmp_path, ("sha-a", "12288", "fa=False"), [1, 2, 3])
    assert base == kvstate.cache_path(tmp_path, ("sha-a", "12288", "fa=False"), [1, 2, 3])
    assert base != kvstate.cache_path(tmp_path, ("sha-b", "12288", "fa=False"), [1, 2, 3])  # another model
    assert base != kvstate.cache_path(tmp_path, ("sha-a", "12288", "fa=True"), [1, 2, 3])  # another layout
    assert base != kvstate.cache_path(tmp_path, ("sha-a", "12288", "fa=False"), [1, 2, 4])  # edited content


def test_pruning_keeps_every_known_group_and_the_newest_others(tmp_path: Path) -> None:
    files = []
    for i in range(8):
        f = tmp_path / f"prefix-{i}.kv"
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + i))
        files.append(f)
    groups = set(files[:3])  # the served content's groups: the oldest files
    kvstate.prune(tmp_path, groups)
    assert sorted(tmp_path.glob("prefix-*.kv")) == sorted([*files[:3], *files[-kvstate.KEEP:]])
