"""bot/cli/main.py through click's CliRunner, with the model replaced by the canned-token FakeBackend."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bot import app as app_module
from bot.answering.prompts import Prompts
from bot.cli.main import main
from bot.content.knowledge import load
from bot.log.export import EXPORT_COLUMNS
from tests.fakes.backend import FakeBackend
from tests.helpers import copying

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = load(ROOT / "content")
LIU = next(p for p in ARTICLE.passages if "科大讯飞董事长刘庆峰" in p.text)
ZHOU = next(p for p in ARTICLE.passages if "通用人工智能的奇点" in p.text)
DECLINE_ZH = Prompts().text("decline_zh")
JSON_FIELDS = {"question", "answer", "refused", "citations", "ttft_ms", "total_ms", "completion_tokens", "model",
               "content_version"}


PICK = copying("刘庆峰", "通用人工智能")  # a fact question's pick prompt: the candidate that holds the answer


def script(messages: list[dict[str, str]]) -> str:
    """Canned answers that are true statements of the article (or an invented one to retract): copied out of
    a candidate on the extractive path, free drafts on the draft path."""
    q = messages[-1]["content"]  # a second attempt also quotes passages here: match on the question's words
    if q.startswith("句子："):
        return PICK(messages)
    if "大学" in q:
        return "江浩然毕业于杭州的浙江大学。"
    return "文章中没有提到。"


@pytest.fixture
def backends(monkeypatch: pytest.MonkeyPatch) -> list[FakeBackend]:
    """Every backend the CLI builds; the real model is never loaded."""
    made: list[FakeBackend] = []

    def fake_make_backend(cfg: object) -> FakeBackend:
        made.append(FakeBackend(script))
        return made[-1]

    monkeypatch.setattr(app_module, "make_backend", fake_make_backend)
    for var in ("BOT_CONFIG", "BOT_DATABASE", "BOT_MODEL"):
        monkeypatch.delenv(var, raising=False)
    return made


@pytest.fixture
def config(tmp_path: Path) -> Path:
    f = tmp_path / "config.yaml"
    f.write_text(f"data_dir: data\ndatabase: data/bot.sqlite3\nlog_level: WARNING\n"
                 f"content:\n  dir: {ROOT / 'content'}\n", encoding="utf-8")
    return f


@pytest.fixture
def draft_config(config: Path) -> Path:
    """The same config with the extractive path off: every question takes the free draft and its checks."""
    config.write_text(config.read_text(encoding="utf-8") + "grounding:\n  extractive: false\n", encoding="utf-8")
    return config


def bot(config: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], input=input, env=env,
                              catch_exceptions=False)


def db_rows(path: Path) -> list[sqlite3.Row]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM turns ORDER BY id").fetchall()
    finally:
        con.close()


def json_lines(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]  # every stdout line must be JSON


# ---- bot ask -------------------------------------------------------------------------------------


def test_ask_json_prints_only_json_with_the_documented_fields(config: Path, backends: list[FakeBackend],
                                                              tmp_path: Path) -> None:
    r = bot(config, "ask", "--json", "科大讯飞董事长是谁？")
    assert r.exit_code == 0, r.stderr
    [obj] = json_lines(r.stdout)
    assert set(obj) >= JSON_FIELDS
    assert obj["question"] == "科大讯飞董事长是谁？"
    assert obj["answer"].startswith("刘庆峰[1]") and obj["refused"] is False
    assert obj["citations"] == [{"id": LIU.id, "n": 1, "section": LIU.section, "text": LIU.text}]
    assert isinstance(obj["ttft_ms"], int) and isinstance(obj["total_ms"], int)
    assert obj["completion_tokens"] > 0
    assert obj["model"] == "fake-model"
    assert obj["content_version"] == ARTICLE.version
    assert len(backends) == 1
    # The database holds the turn with the same fields.
    [row] = db_rows(tmp_path / "data" / "bot.sqlite3")
    assert (row["question"], row["status"], row["refused"]) == ("科大讯飞董事长是谁？", "answered", 0)
    assert LIU.id in row["citations"] and row["model"] == "fake-model"
    assert row["content_version"] == ARTICLE.version and row["total_ms"] == obj["total_ms"]


def test_ask_json_declines_and_retractions(draft_config: Path, backends: list[FakeBackend]) -> None:
    # A retraction is the free draft's: the invented draft ("杭州的浙江大学") must be checked and withdrawn.
    r = bot(draft_config, "ask", "--json", "量子计算机的价格是多少？", "江浩然毕业于哪所大学？")
    assert r.exit_code == 0, r.stderr
    a, b = json_lines(r.stdout)
    assert (a["refused"], a["answer"], a["citations"]) == (True, DECLINE_ZH, [])
    assert (b["refused"], b["answer"], b["citations"]) == (True, DECLINE_ZH, [])
    assert b.get("retracted") is True


def test_ask_reads_one_question_per_stdin_line_each_a_fresh_conversation(
        config: Path, backends: list[FakeBackend]) -> None:
    r = bot(config, "ask", "--json", "-", input="科大讯飞董事长是谁？\n\n周鸿祎认为ChatGPT是什么的奇点？\n")
    assert r.exit_code == 0, r.stderr
    objs = json_lines(r.stdout)
    assert [o["question"] for o in objs] == ["科大讯飞董事长是谁？", "周鸿祎认为ChatGPT是什么的奇点？"]
    assert objs[0]["answer"].startswith("刘庆峰[1]") and objs[0]["citations"][0]["id"] == LIU.id
    assert objs[1]["answer"].startswith("通用人工智能[1]") and objs[1]["citations"][0]["id"] == ZHOU.id
    # One process, one backend, and the second question did not see the first as history (on the
    # extractive path a follow-up's pick prompt names the previous question).
    assert len(backends) == 1 and len(backends[0].calls) == 2
    assert [m["role"] for m in backends[0].calls[-1]] == ["system", "user"]
    assert not any("董事长" in m["content"] for m in backends[0].calls[-1])


def test_ask_plain_text(config: Path, backends: list[FakeBackend]) -> None:
    r = bot(config, "ask", "科大讯飞董事长是谁？")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("Q: 科大讯飞董事长是谁？\nA: 刘庆峰[1]\n原文[1]：「")
    assert f"[1] {LIU.section}" in r.stdout


def test_ask_reports_an_empty_or_too_long_question_without_the_engine(config: Path,
                                                                      backends: list[FakeBackend]) -> None:
    r = bot(config, "ask", "--json", "科" * 2000)
    assert r.exit_code == 0, r.stderr
    [obj] = json_lines(r.stdout)
    assert obj["refused"] is True and "太长" in obj["answer"]
    assert backends[0].calls == []


def test_ask_needs_a_question(config: Path, backends: list[FakeBackend]) -> None:
    r = bot(config, "ask")
    assert r.exit_code == 2
    assert "Missing argument" in r.stderr


# ---- config errors -------------------------------------------------------------------------------


def test_a_config_error_exits_2_with_one_line_on_stderr(tmp_path: Path, backends: list[FakeBackend]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  threads: two\n", encoding="utf-8")
    r = bot(bad, "ask", "--json", "科大讯飞董事长是谁？")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.startswith("error: ")
    assert "model.threads" in r.stderr and "integer" in r.stderr
    assert backends == []


def test_bot_config_env_is_used_and_a_missing_file_is_an_error(config: Path, tmp_path: Path,
                                                               backends: list[FakeBackend]) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["logs"], env={"BOT_CONFIG": str(config)})
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "data" / "bot.sqlite3").exists()
    r = runner.invoke(main, ["logs"], env={"BOT_CONFIG": str(tmp_path / "nope.yaml")})
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "nope.yaml" in r.stderr


def test_bot_database_env_overrides_the_file(config: Path, tmp_path: Path, backends: list[FakeBackend]) -> None:
    other = tmp_path / "elsewhere" / "log.sqlite3"
    r = bot(config, "ask", "--json", "科大讯飞董事长是谁？", env={"BOT_DATABASE": str(other)})
    assert r.exit_code == 0, r.stderr
    assert len(db_rows(other)) == 1
    assert not (tmp_path / "data" / "bot.sqlite3").exists()


def test_a_model_error_exits_2_and_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BOT_CONFIG", "BOT_DATABASE", "BOT_MODEL"):
        monkeypatch.delenv(var, raising=False)
    f = tmp_path / "config.yaml"
    f.write_text(f"data_dir: data\nmodel:\n  dir: no-models-here\ncontent:\n  dir: {ROOT / 'content'}\n",
                 encoding="utf-8")
    r = bot(f, "ask", "--json", "科大讯飞董事长是谁？")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.startswith("error: ") and "missing" in r.stderr and "make setup" in r.stderr


# ---- bot logs ------------------------------------------------------------------------------------


def test_logs_and_exports(config: Path, backends: list[FakeBackend]) -> None:
    assert bot(config, "ask", "--json", "科大讯飞董事长是谁？", "量子计算机的价格是多少？").exit_code == 0

    r = bot(config, "logs")
    assert r.exit_code == 0, r.stderr
    assert "Q: 科大讯飞董事长是谁？" in r.stdout and "A: 刘庆峰[1]" in r.stdout
    assert "Q: 量子计算机的价格是多少？" in r.stdout and "declined" in r.stdout
    assert r.stdout.index("科大讯飞董事长是谁") < r.stdout.index("量子计算机")

    r = bot(config, "logs", "--limit", "1")
    assert "量子计算机" in r.stdout and "科大讯飞董事长是谁" not in r.stdout

    r = bot(config, "logs", "--export", "jsonl")
    assert r.exit_code == 0, r.stderr
    every = json_lines(r.stdout)
    assert {"turns", "passages"} <= {o["table"] for o in every}
    objs = [o for o in every if o["table"] == "turns"]
    assert [o["question"] for o in objs] == ["科大讯飞董事长是谁？", "量子计算机的价格是多少？"]
    assert all(set(EXPORT_COLUMNS) | {"table", "draft", "message_id"} <= set(o) for o in objs)
    assert LIU.id in objs[0]["citations"] and objs[1]["refused"] == 1
    assert any(o["table"] == "passages" and o["id"] == LIU.id for o in every)

    r = bot(config, "logs", "--export", "csv")
    assert r.exit_code == 0, r.stderr
    reader = csv.DictReader(io.StringIO(r.stdout))
    assert set(EXPORT_COLUMNS) | {"draft"} <= set(reader.fieldnames or [])
    got = list(reader)
    assert [g["question"] for g in got] == ["科大讯飞董事长是谁？", "量子计算机的价格是多少？"]
    assert got[0]["status"] == "answered" and got[0]["model"] == "fake-model"

    r = bot(config, "logs", "--channel", "telegram", "--export", "jsonl", "--table", "turns")
    assert r.exit_code == 0 and r.stdout == ""
    r = bot(config, "logs", "--export", "csv", "--table", "events")  # none: the header alone
    assert r.exit_code == 0 and r.stdout.split() == ["id,at,channel,chat_id,user_id,kind,detail"]


# ---- bot content ---------------------------------------------------------------------------------


def test_content_show(config: Path) -> None:
    r = bot(config, "content", "show")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert ARTICLE.version in lines[0] and f"{len(ARTICLE.passages)} passages" in lines[0]
    assert "《对标ChatGPT的自主产品能否跟上》" in lines[0]
    assert len(lines) == 1 + len(ARTICLE.passages)
    assert lines[1 + LIU.order].startswith(f"{LIU.id}  [{LIU.section}]  ")
    full = bot(config, "content", "show", "--full")
    assert LIU.text in full.stdout and LIU.text not in r.stdout


@pytest.fixture
def own_content(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose content folder is a private copy that tests may edit."""
    content = tmp_path / "content"
    shutil.copytree(ROOT / "content", content)
    f = tmp_path / "own.yaml"
    f.write_text("data_dir: data\ndatabase: data/bot.sqlite3\ncontent:\n  dir: content\n", encoding="utf-8")
    return f, content


def test_content_reload_reports_the_diff_against_the_running_snapshot(own_content: tuple[Path, Path],
                                                                      backends: list[FakeBackend],
                                                                      tmp_path: Path) -> None:
    config, content = own_content
    # No snapshot yet: everything is new.
    r = bot(config, "content", "reload")
    assert r.exit_code == 0, r.stderr
    assert f"{len(ARTICLE.passages)} added" in r.stdout and "No running server to signal." in r.stdout

    # Any command that opens the app writes the snapshot of what it serves.
    assert bot(config, "ask", "--json", "科大讯飞董事长是谁？").exit_code == 0
    snap = json.loads((tmp_path / "data" / "content.json").read_text(encoding="utf-8"))
    assert snap["version"] == ARTICLE.version and len(snap["passages"]) == len(ARTICLE.passages)
    r = bot(config, "content", "reload")
    assert r.exit_code == 0 and "Content unchanged" in r.stdout

    text = (content / "article.txt").read_text(encoding="utf-8")
    (content / "article.txt").write_text(text.replace("在别人的院子里建大楼", "在别人的院子里盖大楼"),
                                         encoding="utf-8")
    (content / "extra.txt").write_text("附录\n\n新增的一段。\n", encoding="utf-8")
    r = bot(config, "content", "reload")
    assert r.exit_code == 0, r.stderr
    assert "1 added, 0 removed, 1 changed" in r.stdout
    assert f"{ARTICLE.version} -> " in r.stdout


def test_content_reload_of_broken_content_exits_1_and_says_why(own_content: tuple[Path, Path],
                                                                backends: list[FakeBackend]) -> None:
    config, content = own_content
    assert bot(config, "ask", "--json", "科大讯飞董事长是谁？").exit_code == 0
    for f in content.iterdir():
        f.unlink()
    r = bot(config, "content", "reload")
    assert r.exit_code == 1
    assert "Reload failed" in r.stdout and ARTICLE.version in r.stdout
    assert "no .txt or .md files" in r.stdout
    assert "Signalled" not in r.stdout


# ---- bot eval ------------------------------------------------------------------------------------


def test_eval_prints_each_result_and_totals_and_writes_a_report(config: Path, backends: list[FakeBackend],
                                                                 tmp_path: Path) -> None:
    cases = tmp_path / "qa.jsonl"
    rows = [
        {"id": "f1", "kind": "fact", "question": "科大讯飞董事长是谁？", "expect_any": ["刘庆峰"]},
        {"id": "f2", "kind": "fact", "question": "周鸿祎认为ChatGPT是什么的奇点？", "expect_any": ["通用人工智能"]},
        {"id": "f3", "kind": "fact", "question": "江浩然毕业于哪所大学？", "expect_any": ["杭州"]},
        {"id": "o1", "kind": "out_of_scope", "question": "量子计算机的价格是多少？"},
    ]
    cases.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    report = tmp_path / "report.json"
    r = bot(config, "eval", str(cases), "--report", str(report))
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    for row in rows:
        assert row["question"] in out
    lines = out.splitlines()
    verdict = {ln.split()[1]: ln.split()[0] for ln in lines if ln[:3] in ("ok ", "BAD")}
    assert verdict == {"f1": "ok", "f2": "ok", "f3": "BAD", "o1": "ok"}
    assert "fact: 2/3" in out and "out_of_scope: 1/1" in out
    assert "total: 3/4 correct" in out
    assert "false declines: 1" in out and "f3" in out

    data = json.loads(report.read_text(encoding="utf-8"))
    s = data["summary"]
    assert (s["questions"], s["correct"], s["false_declines"]) == (4, 3, ["f3"])
    assert s["decline_rate"] == 0.5 and s["model"] == "fake-model"
    assert [x["id"] for x in data["results"]] == ["f1", "f2", "f3", "o1"]
    assert data["results"][0]["citations"] == [LIU.id]
    assert data["results"][2]["refused"] is True


def near_miss_set(tmp_path: Path) -> Path:
    """A set in the near-miss format: `answers`, near_miss and off_topic rows (both to be declined)."""
    cases = tmp_path / "nm.jsonl"
    fact = {"kind": "fact", "question": "科大讯飞董事长是谁？", "answers": ["刘庆峰"]}
    rows = [{"id": f"f{i}", **fact} for i in range(6)]
    rows += [{"id": "n1", "kind": "near_miss", "question": "江浩然毕业于哪所大学？"},
             {"id": "o1", "kind": "off_topic", "question": "量子计算机的价格是多少？"}]
    cases.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return cases


def test_eval_reads_near_miss_sets_and_runs_one_half_of_them(config: Path, backends: list[FakeBackend],
                                                             tmp_path: Path) -> None:
    from bot.measure.evaluation import half_of

    cases = near_miss_set(tmp_path)
    report = tmp_path / "r.json"
    assert bot(config, "eval", str(cases), "--report", str(report)).exit_code == 0
    results = json.loads(report.read_text(encoding="utf-8"))["results"]
    assert {r["id"]: r["kind"] for r in results}["n1"] == "out_of_scope"  # near_miss and off_topic: declined
    assert {r["category"] for r in results} == {"fact", "near_miss", "off_topic"}
    assert all(r["correct"] for r in results if r["kind"] == "fact")  # `answers` is what a fact must hold
    tune = tmp_path / "t.json"
    assert bot(config, "eval", str(cases), "--half", "tune", "--report", str(tune)).exit_code == 0
    ids = [r["id"] for r in json.loads(tune.read_text(encoding="utf-8"))["results"]]
    assert ids == [r["id"] for r in results if half_of(r["id"]) == "tune"] and 0 < len(ids) < len(results)


def test_eval_curve_writes_json_and_png_beside_the_report(config: Path, backends: list[FakeBackend],
                                                          tmp_path: Path) -> None:
    cases = near_miss_set(tmp_path)
    report = tmp_path / "out" / "nm.json"
    report.parent.mkdir()
    r = bot(config, "eval", str(cases), "--curve", "--report", str(report))
    assert r.exit_code == 0, r.stderr
    curve = json.loads((tmp_path / "out" / "nm.curve.json").read_text(encoding="utf-8"))
    here = curve["operating_point"]
    assert (here["facts"], here["right"], here["out_of_scope"], here["answered_out_of_scope"]) == (6, 6, 2, 0)
    assert here["threshold"] == 0.7 and curve["set"] == f"{tmp_path.name}_nm"
    assert (tmp_path / "out" / "nm.curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "curve: " in r.stdout


def test_calibrate_fits_weights_the_config_can_name(config: Path, backends: list[FakeBackend],
                                                    tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert bot(config, "eval", str(near_miss_set(tmp_path)), "--report", str(report)).exit_code == 0
    weights = tmp_path / "w.json"
    r = bot(config, "calibrate", str(report), "--out", str(weights), "--signals", "margin,copy_vs_none")
    assert r.exit_code == 0, r.output
    assert "7 extracted questions (6 right if answered)" in r.output and "margin" in r.output
    fitted = json.loads(weights.read_text(encoding="utf-8"))
    assert fitted["signals"] == ["margin", "copy_vs_none"] and fitted["pick"] == "numbered"  # as the run read them
    judged = json.loads(report.read_text(encoding="utf-8"))
    judged["summary"]["pick"] = "judged"
    (tmp_path / "j.json").write_text(json.dumps(judged), encoding="utf-8")
    mixed = bot(config, "calibrate", str(report), str(tmp_path / "j.json"), "--out", str(tmp_path / "m.json"))
    assert mixed.exit_code != 0 and "pick judged and numbered; fix:" in mixed.output
    config.write_text(config.read_text(encoding="utf-8") + f"grounding:\n  weights: {weights}\n", encoding="utf-8")
    assert bot(config, "ask", "科大讯飞董事长是谁？").exit_code == 0
    weights.write_text("{", encoding="utf-8")
    r = bot(config, "ask", "科大讯飞董事长是谁？")
    assert r.exit_code == 2 and "grounding.weights" in r.stderr


def test_naive_eval_turns_the_checks_and_the_extraction_off_but_the_models_decline(
        config: Path, backends: list[FakeBackend], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert bot(config, "eval", str(near_miss_set(tmp_path)), "--naive", "--report", str(report)).exit_code == 0
    results = json.loads(report.read_text(encoding="utf-8"))["results"]
    assert {r["path"] for r in results} == {"draft"}  # every question drafted freely
    by_id = {r["id"]: r for r in results}
    assert not by_id["n1"]["refused"]  # the invented university goes out unchecked
    # Only the model's own "文章中没有提到" (the fake's answer to the rest) declines.
    assert all(r["refused"] and r["decline_reason"].startswith("model_declined") for i, r in by_id.items()
               if i != "n1"), [(i, r["decline_reason"]) for i, r in by_id.items()]


def test_eval_rejects_a_bad_question_file(config: Path, backends: list[FakeBackend], tmp_path: Path) -> None:
    cases = tmp_path / "bad.jsonl"
    cases.write_text('{"id": "x", "kind": "fact", "question": "q"}\nnot json\n', encoding="utf-8")
    r = bot(config, "eval", str(cases))
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and "bad.jsonl:2" in r.stderr
