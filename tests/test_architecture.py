"""The package's shape: no import cycles, stages import only earlier stages, prediction without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "chestdx"
# docs/architecture.md: each stage may import the stages before it; front ends sit on top.
STAGES = ["errors", "progress", "writable", "io", "preprocess", "models", "explain", "pipeline", "evaluate", "train", "outputs"]
FRONT_ENDS = {"cli", "serve", "node", "batch"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every chestdx module -> the chestdx modules it imports anywhere (function-level imports too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chestdx"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("chestdx")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Returns: one import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "chestdx"


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_stages_import_only_earlier_stages():
    order = {s: i for i, s in enumerate(STAGES)}
    wrong = []
    for module, targets in import_graph().items():
        stage = _stage(module)
        if stage in FRONT_ENDS or stage == "chestdx":
            continue
        assert stage in order, f"{module}: stage {stage!r} is not in the documented order {STAGES}"
        for target in targets:
            other = _stage(target)
            if other != "chestdx" and (other in FRONT_ENDS or order[other] > order[stage]):
                wrong.append(f"{module} -> {target}")
    assert not wrong


def test_only_the_cli_imports_batch():
    graph = import_graph()
    importers = {m for m, targets in graph.items() if _stage(m) != "batch" and any(_stage(t) == "batch" for t in targets)}
    assert importers == {"chestdx.cli"}


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=300, check=True)
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> Path:
    from chestdx.io.sample import write_sample_series

    folder = tmp_path_factory.mktemp("arch") / "study"
    write_sample_series(folder, n_slices=24, size=128, progress=False)
    return folder


def test_predict_with_an_onnx_model_imports_neither_torch_nor_monai(small_study):
    loaded = _modules_after("import contextlib, io\nfrom chestdx.cli import main\n"
                            "with contextlib.redirect_stdout(io.StringIO()):\n"
                            f"    assert main(['--quiet', 'predict', {str(small_study)!r}, '--json']) == 0")
    assert "onnxruntime" in loaded and "chestdx.pipeline.diagnosis" in loaded
    assert "torch" not in loaded and "monai" not in loaded


def test_help_info_and_preview_stay_light(small_study, tmp_path):
    loaded = _modules_after("import contextlib, io\nfrom chestdx.cli import main\n"
                            "with contextlib.redirect_stdout(io.StringIO()):\n"
                            f"    assert main(['--quiet', 'info', {str(small_study)!r}]) == 0\n"
                            f"    assert main(['--quiet', 'preview', {str(small_study)!r}, '-o', "
                            f"{str(tmp_path / 'sheet.png')!r}]) == 0")
    assert not loaded & {"torch", "monai", "onnxruntime"}
