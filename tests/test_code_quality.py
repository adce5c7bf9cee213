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
