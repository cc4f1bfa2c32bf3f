"""Prefix residency alone: routing to the prefix a prompt starts with, restore before compute, LRU eviction
that spares a prefix being computed, and computing a chunk per step."""

from __future__ import annotations

from pathlib import Path

from bot.backends.prefixes import Prefixes, PrefixOps


class FakeKV:
    """Records what the prefix store asks of llama.cpp; files 'exist' when saved."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.seqs: dict[int, list[int]] = {}
        self.evaluated = 0
        self.log: list[str] = []

    def ops(self) -> PrefixOps:
        return PrefixOps(self.restore, self.evaluate, self.save, self.drop)

    def restore(self, seq: int, path: Path, tokens: list[int]) -> bool:
        self.log.append(f"restore {seq}")
        self.seqs[seq] = list(tokens)
        return True

    def evaluate(self, seq: int, chunk: list[int], pos: int) -> None:
        self.seqs.setdefault(seq, [])[pos:] = chunk
        self.evaluated += len(chunk)

    def save(self, seq: int, path: Path, tokens: list[int]) -> None:
        path.write_bytes(b"kv")

    def drop(self, seq: int) -> None:
        self.seqs.pop(seq, None)


def group(n: int, size: int = 10) -> list[int]:
    return [1, 2, 3] + [100 * n + i for i in range(size)]  # a shared instruction start, then the group


def test_computes_once_in_chunks_then_routes_and_restores(tmp_path: Path) -> None:
    kv = FakeKV(tmp_path)
    store = Prefixes([0, 1], kv.ops(), chunk=4)
    steps = list(store.warm(group(1), tmp_path / "g1"))
    assert steps[-1] == "computed" and steps.count("computing") == 3  # 13 tokens in chunks of 4
    assert kv.seqs[0] == group(1) and kv.evaluated == 13
    for g in (2, 3):
        assert list(store.warm(group(g), tmp_path / f"g{g}"))[-1] == "computed"
    # Two sequences for three groups: group 1, least recently used, was evicted but is on disk.
    assert store.cells() == 2 * 13 and [p.seq for p in store.known] == [None, 1, 0]
    seq, shared = store.route(group(1) + [7, 8])
    assert shared == 13 and kv.seqs[seq] == group(1) and kv.log == [f"restore {seq}"]
    assert kv.evaluated == 3 * 13  # restored, not computed again
    # Routing leaves only the routed prefix resident: a second one would widen every answer's attention.
    assert store.cells() == 13 and list(kv.seqs) == [seq]
    # A prompt sharing only the instruction start goes to the resident prefix, which holds those 3 tokens.
    assert store.route([1, 2, 3, 9, 9]) == (seq, 3)


def test_a_prefix_that_running_answers_started_from_is_kept(tmp_path: Path) -> None:
    kv = FakeKV(tmp_path)
    running: set[int] = set()
    store = Prefixes([0, 1], kv.ops(), chunk=100, in_use=lambda: running)
    list(store.warm(group(1), tmp_path / "g1"))
    running.add(store.route(group(1))[0])  # an answer runs from group 1
    seq2, _ = store.route(group(2)) if list(store.warm(group(2), tmp_path / "g2")) else (None, 0)
    assert store.cells() == 2 * 13  # group 1 stays while its answer runs
    running.clear()
    assert store.route(group(2)) == (seq2, 13) and store.cells() == 13


def test_a_prefix_being_computed_is_neither_evicted_nor_routed_to(tmp_path: Path) -> None:
    kv = FakeKV(tmp_path)
    store = Prefixes([0], kv.ops(), chunk=4)
    list(store.warm(group(1), tmp_path / "g1"))
    job = store.warm(group(2), tmp_path / "g2")
    next(job)  # group 2 is being computed (it took the only sequence: group 1 went to disk)
    assert store.route(group(2)) is None  # it waits for the prefix rather than read 5k tokens at once
    assert kv.seqs[0] == group(2)[:4]  # untouched by the route
    list(job)
    assert store.route(group(2)) == (0, 13)


def test_without_a_cache_file_an_evicted_prefix_is_computed_again_between_steps(tmp_path: Path) -> None:
    kv = FakeKV(tmp_path)
    store = Prefixes([0], kv.ops(), chunk=100)
    list(store.warm(group(1), None))
    list(store.warm(group(2), None))
    assert store.route(group(1)) is None and store.later == [store.known[0]]  # not read inline
    entry = store.later.pop()
    entry.busy = False
    list(store.warm(entry.tokens, None))  # what the backend's job does
    assert store.route(group(1)) == (0, 13) and kv.evaluated == 3 * 13 and "restore 0" not in kv.log


def test_a_prefix_waits_for_kv_room_and_idle_prefixes_make_way(tmp_path: Path) -> None:
    kv = FakeKV(tmp_path)
    running: set[int] = set()
    store = Prefixes([0, 1], kv.ops(), chunk=100, in_use=lambda: running, room=lambda n: store.cells() + n <= 20)
    list(store.warm(group(1), tmp_path / "g1"))
    list(store.warm(group(2), tmp_path / "g2"))  # group 1, idle, made way: 26 cells would not fit 20
    assert [p.seq for p in store.known] == [None, 0]
    running.add(0)
    assert store.route(group(1)) is None  # group 2 serves a running answer: group 1 waits for room
    running.clear()
    assert store.route(group(1)) is not None and store.cells() == 13


def test_a_pinned_prefix_has_its_own_sequence_and_stays_when_others_come_and_go(tmp_path: Path) -> None:
    kv = FakeKV(tmp_path)
    store = Prefixes([0], kv.ops(), chunk=64, pinned_seqs=(1,))
    pinned = [9, 9, 9, 9]  # the extraction's instructions: no file, never evicted
    assert list(store.warm(pinned, None, pin=True))[-1] == "computed" and kv.seqs[1] == pinned
    for g in (1, 2):  # two content groups share the one content sequence
        assert list(store.warm(group(g), tmp_path / f"g{g}"))[-1] == "computed"
    assert kv.seqs[0] == group(2) and kv.seqs[1] == pinned
    # A pick prompt routes to the pinned prefix; the idle content prefix (on disk) leaves memory.
    assert store.route(pinned + [5, 6]) == (1, 4) and list(kv.seqs) == [1]
    store.retain([group(1)])  # a reload keeps only the new content's prefixes: the pinned one stays
    assert kv.seqs[1] == pinned and store.route(group(1) + [7])[0] == 0
