"""One PyTorch thread against the default count while other processes share the cores.

Explains a batch of 8 images (ResNet-18, random weights, 224 px) with 1 thread and with
PyTorch's default count (the number of cores), with 0, 1 and 2 extra processes that keep a core
busy each (on top of whatever else runs on the machine; its load average is printed). Wall time,
median of 3 calls, both counts measured alternately in the same run.

Run: ``python benchmarks/threads_busy.py``; writes ``benchmarks/results/threads_busy.md``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # measure this checkout, not an installed copy

import torch  # noqa: E402
import torchvision  # noqa: E402

from gradcampp import GradCAMPP  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "threads_busy.md"
SPIN = "import time\nend = time.time() + 300\nwhile time.time() < end:\n    pass\n"


def main() -> None:
    many = torch.get_num_threads()
    torch.manual_seed(0)
    cam = GradCAMPP(torchvision.models.resnet18(weights=None).eval())
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cam.explain(x[:2])  # warm-up
    rows = []
    for busy in (0, 1, 2):
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
        try:
            time.sleep(1.0)
            times: dict[int, list[float]] = {1: [], many: []}
            for _ in range(3):
                for count in times:
                    torch.set_num_threads(count)
                    start = time.perf_counter()
                    cam.explain(x)
                    times[count].append(time.perf_counter() - start)
            load = os.getloadavg()[0]
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
        one, default = statistics.median(times[1]), statistics.median(times[many])
        rows.append(
            f"| {busy} | {load:.1f} | {one:.2f} | {default:.2f} | **{default / one:.2f}** |"
        )
    torch.set_num_threads(many)
    text = "\n".join(
        [
            "# One thread against the default count on a busy machine",
            "",
            f"Command: `python benchmarks/threads_busy.py`. ResNet-18 (random weights), a batch of"
            f" 8 images at 224 px, `GradCAMPP.explain`; wall time, median of 3; {os.cpu_count()}"
            f" cores, default count {many} threads. Other jobs shared the machine as well (the"
            " load average is the 1-minute one at the end of each row's measurement).",
            "",
            "| extra busy processes | load average | 1 thread, s | default threads, s |"
            " default / 1 thread |",
            "|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    RESULTS.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
