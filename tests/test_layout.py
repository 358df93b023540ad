"""The layout rules of DESIGN.md section 2: one import namespace, imports running one way."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from djepa_bench.config import to_dict
from djepa_bench.train.api import quick_config

REPO = Path(__file__).resolve().parents[1]
STAGES = ("djepa_bench.train", "djepa_bench.eval_protocols", "djepa_bench.reports")
ABOVE_CORE = (*STAGES, "djepa_bench.commands", "djepa_bench.cli")
# What each layer may not import (a prefix match on the imported module's dotted name).
FORBIDDEN = {
    "core": ABOVE_CORE,
    "djepa_bench.train": ("djepa_bench.eval_protocols", "djepa_bench.reports", *ABOVE_CORE[3:]),
    "djepa_bench.eval_protocols": ("djepa_bench.train", "djepa_bench.reports", *ABOVE_CORE[3:]),
    "djepa_bench.reports": ("djepa_bench.train", "djepa_bench.eval_protocols", *ABOVE_CORE[3:]),
}
FOLDERS = {
    "core": "djepa_bench",
    "djepa_bench.train": "train",
    "djepa_bench.eval_protocols": "eval_protocols",
    "djepa_bench.reports": "reports",
}


def _layer_files(layer: str) -> list[Path]:
    files = sorted((REPO / FOLDERS[layer]).rglob("*.py"))
    if layer == "core":  # the CLI joins the layers, so it sits above them
        files = [
            f
            for f in files
            if f.name not in ("cli.py", "__main__.py") and "commands" not in f.parts
        ]
    return files


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module an import statement names (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _names(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_imports_run_one_way(layer):
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in _layer_files(layer)
        for line, module in _imported_modules(path)
        if _names(module, FORBIDDEN[layer])
    ]
    assert _layer_files(layer), f"no files found for {layer}"
    assert not offences, "\n".join(offences)


def test_nothing_imports_the_stage_folders_as_top_level_packages():
    files = [p for layer in FOLDERS for p in _layer_files(layer)]
    files += sorted((REPO / "tests").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
    files += sorted((REPO / "djepa_bench" / "commands").glob("*.py"))
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in files
        for line, module in _imported_modules(path)
        if module.split(".")[0] in ("train", "eval_protocols", "reports")
    ]
    assert not offences, "\n".join(offences)


def _python(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_only_djepa_bench_is_importable_at_top_level(tmp_path):
    for name in ("train", "reports", "eval_protocols"):
        result = _python(["-c", f"import {name}"], tmp_path)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, name
    result = _python(["-c", "import djepa_bench.train, djepa_bench.reports"], tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_users_train_py_and_reports_py_do_not_shadow_the_suite(tmp_path):
    for name in ("train.py", "reports.py", "eval_protocols.py"):
        (tmp_path / name).write_text("raise SystemExit('the user file was imported')\n")
    cfg = quick_config("synthetic", "ijepa", train__monitor=False, data__train_subset=128)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    trained = _python(
        ["-m", "djepa_bench", "train", "--config", "tiny.yaml", "--out", "run"], tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    reported = _python(["-m", "djepa_bench", "report", "run", "--out", "rep"], tmp_path)
    assert "the user file was imported" not in reported.stderr
    listed = _python(["-m", "djepa_bench", "list", "protocols"], tmp_path)
    assert listed.returncode == 0 and "knn" in listed.stdout, listed.stderr
