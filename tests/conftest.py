"""Shared test helpers: running the CLI in-process, locating the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DJEPA_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.gz"

# One torch and one BLAS thread per test process: the models here are tiny, and on a
# 2-core machine shared with anything else, two threads per process stall on barriers
# (measured 5-40x slower). Subprocess tests set their own threads.
torch.set_num_threads(1)
threadpool_limits(1)


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def run_cli(capsys):
    """Run `djepa-bench ARGS...` in this process; returns exit code, stdout and stderr."""
    from djepa_bench.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """Folder holding the shared CIFAR-10 JPEG archive; skips when it is absent."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {CIFAR_ARCHIVE}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """Run directories of a tiny I-JEPA and D-JEPA run on `synthetic` (a few seconds each)."""
    from djepa_bench.train.api import quick_config, train_run

    root = tmp_path_factory.mktemp("tiny-runs")
    runs = {}
    for method in ("ijepa", "djepa"):
        cfg = quick_config("synthetic", method, train__epochs=1, train__monitor=False)
        runs[method] = train_run(cfg, root / method)
    return runs
