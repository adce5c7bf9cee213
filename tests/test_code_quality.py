"""Project rules that tools do not check for us."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "dattavani_asr"
MAX_FUNCTION_LINES = 60


def _functions() -> list[tuple[str, int]]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                found.append((f"{path.relative_to(SOURCE)}:{node.lineno} {node.name}", length))
    return found


def test_no_function_longer_than_limit() -> None:
    functions = _functions()
    assert len(functions) > 50
    too_long = [(name, length) for name, length in functions if length > MAX_FUNCTION_LINES]
    assert not too_long, too_long


@pytest.mark.parametrize("module", ["dattavani_asr", "dattavani_asr.cli"])
def test_import_does_not_load_inference_libraries(module: str) -> None:
    import subprocess
    import sys

    heavy = "('ctranslate2', 'onnxruntime', 'tokenizers')"
    code = f"import sys, {module}; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# Data flows one way: a module may import from its own layer's packages or lower ones, never higher.
LAYERS = {
    "core": 0,  # options, errors, units of work, transcript
    "audio": 1,  # decode, VAD, windows
    "io": 1,  # sources, sinks, writers, retries
    "models": 1,  # the model registry
    "imported": 1,  # imported models' cards, recommended checkpoints
    "importing": 2,  # `models import`: CTranslate2's converter, a decode to verify
    "config": 1,  # settings of the commands
    "evaluation": 1,
    "engine": 2,  # CTranslate2 Whisper
    "pipeline": 3,  # the core run, the scheduler, live sessions, the library's Transcriber
    "batch": 4,
    "server": 4,
    "cli": 5,
    "__main__": 5,
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The package's own modules `path` imports (relative imports resolved), anywhere in the file."""
    module = _module(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("dattavani_asr.")}


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if module.count(".") else ""
    return LAYERS.get(top)


def test_imports_follow_the_flow_and_form_no_circle() -> None:
    graph = {_module(path): _imports(path) for path in SOURCE.rglob("*.py")}
    upward = [
        (module, imported)
        for module, imports in graph.items()
        for imported in imports
        if _layer(module) is not None and (_layer(imported) or 0) > (_layer(module) or 0)
    ]
    assert not upward, upward
    assert all(_layer(module) is not None for module in graph if module.count(".")), sorted(graph)
    assert not _cycles(graph)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles between the package's modules (a package imports its own submodules freely)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if imported.startswith(module + ".") or module.startswith(imported + "."):
                continue
            if state.get(imported) == 1:
                cycles.append([*trail, imported])
            elif imported in graph and imported not in state:
                visit(imported, [*trail, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles
