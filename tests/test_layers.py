"""The package layout is the architecture: every import of every form runs down the layers, channels reach
only the core, and no module imports itself back through another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parent.parent / "bot"

# The layers, lowest first: a module may import its own package and the packages ranked below it. The
# top-level modules `types`, `errors` and `config` are the floor; `app` wires everything; `cli` drives it.
LAYERS = ["types", "errors", "config", "text", "content", "backends", "log", "grounding", "answering", "core",
          "channels", "measure", "app", "cli", "__main__"]
# Beyond the order: an adapter translates to and from the core and renders its events, nothing more.
FORBIDDEN = {"channels": {"log", "answering", "grounding", "backends", "content"}}


def layer(module: str) -> str:
    """The layer of a dotted module name under bot ("bot.core.gate" -> "core", "bot.types" -> "types")."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bot"


def module_name(path: Path) -> str:
    rel = path.relative_to(BOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every bot module `path` imports, in any form: `import bot.x`, `from bot import x`, `from bot.x import
    y` (a submodule when y is one), relative imports, and imports inside functions."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "bot" or a.name.startswith("bot.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base != "bot" and not base.startswith("bot."):
                continue
            found.add(base)
            for a in node.names:
                sub = f"{base}.{a.name}"
                if (BOT.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                        (BOT.parent / Path(*sub.split("."))).is_dir():
                    found.add(sub)
    return found - {"bot"}


MODULES = {module_name(p): p for p in sorted(BOT.rglob("*.py"))}


def test_the_import_reader_sees_every_form(tmp_path: Path) -> None:
    probe = BOT / "channels" / "_probe_for_test.py"
    probe.write_text("import bot.log.store\nfrom bot import content\nfrom ..answering import engine\n"
                     "def f():\n    from bot.grounding.citations import cite\n", encoding="utf-8")
    try:
        assert imports(probe) == {"bot.log.store", "bot.content", "bot.answering", "bot.answering.engine",
                                  "bot.grounding.citations"}
    finally:
        probe.unlink()


def test_top_level_holds_only_the_layers_and_a_few_modules() -> None:
    top = {p.stem for p in BOT.glob("*.py")} | {p.name for p in BOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert top - {"__init__", "data"} <= set(LAYERS), top - set(LAYERS)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_down_the_layers(name: str) -> None:
    mine = layer(name)
    for target in sorted(imports(MODULES[name])):
        theirs = layer(target)
        if theirs == mine or mine == "bot":
            continue
        assert theirs in LAYERS and mine in LAYERS, (name, target)
        assert LAYERS.index(theirs) < LAYERS.index(mine), f"{name} imports {target}: up the layers"
        assert theirs not in FORBIDDEN.get(mine, set()), f"{name} imports {target}: not for {mine}"


def test_no_import_loop() -> None:
    graph = {name: {t for t in imports(path) if t in MODULES and t != name} for name, path in MODULES.items()}
    # A package's __init__ importing its own modules is how it exports them, not a loop.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (MODULES[t].name == "__init__.py" and name.startswith(t + "."))}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, " -> ".join([*path[path.index(nxt):], nxt]) if nxt in path else nxt
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


# How big a piece may grow before it is split by job (the core's parts and the engine stay smaller).
MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_FUNCTION_LINES = 400, 250, 60
SMALLER = {"bot.core": 200, "bot.answering.engine": 200}


def test_modules_classes_and_functions_stay_small() -> None:
    too_big = []
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_big.append(f"{name}: {len(source.splitlines())} lines")
        limit = next((v for k, v in SMALLER.items() if name == k or name.startswith(k + ".")), MAX_CLASS_LINES)
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, ast.ClassDef) and lines > limit:
                too_big.append(f"{name}.{node.name}: {lines} lines (at most {limit})")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and lines > MAX_FUNCTION_LINES:
                too_big.append(f"{name}.{node.name}(): {lines} lines")
    assert not too_big, too_big
