"""``benchmarks/gpu.py --end-to-end`` on the CPU: files in, files out, a table with its rates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_end_to_end_mode_runs_on_the_cpu(tmp_path):
    out = tmp_path / "e2e.md"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--end-to-end"]
    command += ["--device", "cpu", "--models", "resnet50", "--images", "2", "--batch-size", "2"]
    result = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "device: CPU; 2 500x375 JPEGs" in text
    (row,) = [line for line in text.splitlines() if line.startswith("| ResNet-50 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "2"  # the batch
    rates = [float(cell) for cell in cells[2:]]
    assert all(rate >= 0 for rate in rates) and min(rates[:4]) > 0
    assert re.search(r"\| ResNet-50 \| 2 \| \d+ \| [\d.]+ \| \d+ \| [\d.]+ \| [\d.]+ \|", text)
