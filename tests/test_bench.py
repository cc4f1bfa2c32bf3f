"""`bot bench`: llama-batched-bench's table read right, the plot drawn from a report, the targets computed;
the whole command on the small model (a short run) writing its JSON and PNG; `--backend openai` asking the
same questions through the service and then an embedded model (faked here; measured in the closing notes)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot import app as app_module
from bot.cli.main import main
from bot.measure import bench
from tests.fakes.backend import FakeBackend
from tests.helpers import ROOT, copying

TABLE = """
main: n_kv_max = 8192, n_batch = 512, n_ubatch = 512, flash_attn = 0, is_pp_shared = 1, n_gpu_layers = -1

|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|  3100 |     48 |    1 |   3148 |   63.231 |    49.03 |    5.521 |     8.69 |   68.752 |    45.79 |
|  3100 |     48 |    4 |   3292 |   63.102 |    49.13 |   21.002 |     9.14 |   84.104 |    39.14 |
"""


def report() -> dict:
    return {
        "model": "m", "flash_attn": False, "prefix_tokens": 3100,
        "concurrency": [
            {"conversations": 1, "last_answer_s": 2.0, "serial_s": 2.0, "last_over_serial": 1.0, "avg_answer_s": 2.0,
             "max_first_token_s": 0.9, "aggregate_tokens_per_s": 8.0, "serial_tokens_per_s": 8.0},
            {"conversations": 4, "last_answer_s": 6.0, "serial_s": 8.0, "last_over_serial": 0.75,
             "avg_answer_s": 5.0, "max_first_token_s": 1.5, "aggregate_tokens_per_s": 10.7,
             "serial_tokens_per_s": 8.0}],
        "throughput": {"answer_tokens": 48, "bot": [{"conversations": 1, "decode_tokens_per_s": 8.2},
                                                    {"conversations": 4, "decode_tokens_per_s": 9.0}],
                       "llama_batched_bench": bench.parse_batched_bench(TABLE)},
        "overhead": {"bot_first_token_s": 0.5, "bare_first_token_s": 0.5, "bot_decode_tokens_per_s": 8.0,
                     "bare_decode_tokens_per_s": 8.4},
        "first_token": {"cached_s": 0.5, "warm_answer_s": 2.0},
        "restart": {"answered_s": 5.0, "warm_total_ms": 2000},
    }


def test_llama_batched_bench_table_is_read_by_column() -> None:
    assert bench.parse_batched_bench(TABLE) == [{"conversations": 1, "decode_tokens_per_s": 8.69},
                                                {"conversations": 4, "decode_tokens_per_s": 9.14}]


def test_targets_are_the_ratios_of_the_report() -> None:
    t = bench.targets(report())
    assert t["four_users_last_over_serial"] == 0.75
    assert t["bot_over_llama_batched_bench"] == {1: 0.94, 4: 0.98}
    assert t["decode_rate_bot_over_bare"] == 0.95 and t["restart_first_answer_over_warm"] == 2.5


def test_plot_writes_a_png(tmp_path: Path) -> None:
    bench.plot(report(), tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.model
def test_bot_bench_runs_from_one_command(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\ndatabase: {tmp_path / 'b.sqlite3'}\n"
                      f"model:\n  name: qwen2.5-coder-0.5b\n  dir: {ROOT / 'models'}\n  max_tokens: 24\n"
                      f"content:\n  dir: {ROOT / 'content'}\n", encoding="utf-8")
    env = dict(os.environ, BOT_CONFIG=str(config))
    env.pop("BOT_MODEL", None)
    out = tmp_path / "out"
    run = subprocess.run([str(Path(sys.executable).parent / "bot"), "bench", "--out", str(out), "--levels", "1,2",
                          "--tokens", "12", "--no-cold"], env=env, capture_output=True, text=True, timeout=1200,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert [r["conversations"] for r in data["concurrency"]] == [1, 2]
    assert all(r["aggregate_tokens_per_s"] > 0 for r in data["concurrency"])
    assert data["first_token"]["restored"]["prefix_source"] == "restored"
    assert data["restart"]["prefix_source"] == "restored" and data["restart"]["answered_s"] > 0
    assert data["overhead"]["bare_decode_tokens_per_s"] and "restart_first_answer_over_warm" in data["targets"]
    assert (out / "bench.png").stat().st_size > 10_000


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, list[tuple[str, FakeBackend]]]:
    """A config, and every backend `bot bench` builds with the backend it was configured for."""
    built: list[tuple[str, FakeBackend]] = []

    def fake(cfg: object) -> FakeBackend:
        built.append((cfg.model.backend, FakeBackend(copying("刘庆峰", "通用人工智能"))))  # type: ignore[attr-defined]
        return built[-1][1]

    monkeypatch.setattr(app_module, "make_backend", fake)
    for var in ("BOT_CONFIG", "BOT_DATABASE", "BOT_MODEL", "BOT_OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: data\ndatabase: data/bot.sqlite3\nlog_level: WARNING\n"
                      f"content:\n  dir: {ROOT / 'content'}\n", encoding="utf-8")
    return config, built


def test_bench_backend_openai_asks_the_same_questions_through_the_service_then_embedded(
        made: tuple[Path, list[tuple[str, FakeBackend]]], tmp_path: Path) -> None:
    config, built = made
    out, questions = tmp_path / "out", tmp_path / "q.jsonl"
    asked = [f"第{i}个问题：科大讯飞董事长是谁？" for i in range(10)]
    questions.write_text("".join(json.dumps({"id": f"q{i}", "kind": "fact", "question": q, "expect_any": ["刘"]},
                                            ensure_ascii=False) + "\n" for i, q in enumerate(asked)), encoding="utf-8")
    r = CliRunner().invoke(main, ["--config", str(config), "bench", "--backend", "openai", "--levels", "1,3",
                                  "--rounds", "2", "--out", str(out), "--questions", str(questions)],
                           env={"BOT_OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert [name for name, _ in built] == ["openai", "embedded"]  # one after the other, never both at once
    with sqlite3.connect(tmp_path / "data" / "bot.sqlite3") as con:
        logged = [q for (q,) in con.execute("SELECT question FROM turns WHERE channel='bench' ORDER BY id")]
    # Each backend: 1x2 then 3x2 asks, the set's questions in order, none asked twice (no cached prompt).
    assert sorted(logged[:8]) == sorted(asked[:8]) and sorted(logged[8:]) == sorted(asked[:8])
    data = json.loads((out / "deployment.json").read_text(encoding="utf-8"))
    assert data["base_url"] == "http://127.0.0.1:9/v1"
    for name in ("openai", "embedded"):
        assert [(x["conversations"], x["questions"]) for x in data[name]] == [(1, 2), (3, 6)]
        assert all(x["answered"] + x["declined"] == x["questions"] and not x["failed"] for x in data[name])
    for row in data["compare"]:
        assert row["ratio"] == round(row["service_qps"] / row["embedded_qps"], 2)


def test_bench_backend_openai_without_a_service_names_the_key(
        made: tuple[Path, list[tuple[str, FakeBackend]]]) -> None:
    config, built = made
    r = CliRunner().invoke(main, ["--config", str(config), "bench", "--backend", "openai"])
    assert r.exit_code != 0 and "model.base_url" in r.output and not built
    r = CliRunner().invoke(main, ["--config", str(config), "bench", "--levels", "0,2"])
    assert r.exit_code == 2 and "--levels" in r.output and not built
