"""Time and memory of explaining long 1-d signals: the resize must stay linear in the length.

Two seeded Conv1d networks explain one signal of each length given (default: 48,000, 480,000 and
9,600,000 samples: 3 s, 30 s and 10 min of 16 kHz audio), at their default layer:

- ``m5``: the M5 raw-waveform network of Dai et al. (ICASSP 2017, "Very deep convolutional neural
  networks for raw waveforms"): four convolutions (128, 128, 256, 512 channels; the first with an
  80-sample kernel and stride 4), each followed by batch norm, ReLU and a 4x max pool, then global
  average pooling and a linear layer; the default layer has 1/1024 of the input's samples;
- ``tiny``: two stride-4 convolutions (16 and 32 channels), global average pooling and a linear
  layer: a network that costs almost nothing, so the resize's share of the time is at its largest.

Each row runs in its own process; peak memory is ``VmHWM`` of ``/proc/self/status``, reset to the
current RSS (``/proc/self/clear_refs``) after the model and the signal are made and before each
measured call, so "extra" is what that call adds. Columns:

- inference: one forward pass under ``torch.inference_mode()``: time and extra peak memory;
- explain: ``GradCAMPP(model).explain(x)`` with upsampling to the input's length;
- resize: the upsampling alone (``gradcampp.resize.resize`` of the layer-resolution map), and its
  share of the explain call's time.

Usage (from the repository root; the package is imported from ``src/`` of this checkout)::

    python benchmarks/long_inputs.py                   # writes benchmarks/results/long_inputs.md
    python benchmarks/long_inputs.py --lengths 48000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # measure this checkout, not an installed copy


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current VmRSS


def _network(name: str):
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    if name == "m5":
        layers, width = [], 1
        for out, kernel, stride in [(128, 80, 4), (128, 3, 1), (256, 3, 1), (512, 3, 1)]:
            layers += [
                nn.Conv1d(width, out, kernel, stride=stride, padding=kernel // 2),
                nn.BatchNorm1d(out),
                nn.ReLU(),
                nn.MaxPool1d(4),
            ]
            width = out
        return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, 35))
    return nn.Sequential(
        nn.Conv1d(1, 16, 9, stride=4, padding=4),
        nn.ReLU(),
        nn.Conv1d(16, 32, 9, stride=4, padding=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


def _timed(call) -> tuple[float, float, object]:
    """Seconds and extra peak MiB of ``call()``, and its result."""
    _reset_peak()
    before = _status_kib("VmHWM")
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    return seconds, (_status_kib("VmHWM") - before) / 1024, result


def child(network: str, length: int, threads: int) -> dict[str, float]:
    """Measure one length in this process (see the module docstring)."""
    import torch

    from gradcampp import GradCAMPP
    from gradcampp.resize import resize

    torch.set_num_threads(threads)
    model = _network(network).eval()
    x = torch.randn(1, 1, length, generator=torch.Generator().manual_seed(1))
    explainer = GradCAMPP(model)
    explainer.explain(x[..., :length])  # warm-up, and the default layer found
    explainer = GradCAMPP(model, conv_layer=explainer.backend.layer_name(x))

    def infer():
        with torch.inference_mode():
            return model(x)

    t_inf, m_inf, _ = _timed(infer)
    t_exp, m_exp, maps = _timed(lambda: explainer.explain(x))
    assert maps.shape == (1, length) and bool(torch.isfinite(maps).all())
    low = explainer.explain(x, upsample=False)
    t_res, m_res, _ = _timed(lambda: resize(low, (length,)))
    return {
        "network": network,
        "layer": explainer.backend.layer_name(x),
        "layer_samples": int(low.shape[-1]),
        "length": length,
        "inference_s": t_inf,
        "inference_mib": m_inf,
        "explain_s": t_exp,
        "explain_mib": m_exp,
        "resize_s": t_res,
        "resize_mib": m_res,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[48_000, 480_000, 9_600_000])
    parser.add_argument("--networks", nargs="+", default=["m5", "tiny"], choices=["m5", "tiny"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/long_inputs.md")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.threads)))
        return
    rows = []
    for network in args.networks:
        for length in args.lengths:
            command = [sys.executable, __file__, "--child", network, str(length)]
            command += ["--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(f"measured {network}, {length} samples", file=sys.stderr)
    lines = [
        "# Long 1-d inputs: time and extra peak memory",
        "",
        f"`python benchmarks/long_inputs.py --threads {args.threads} --networks "
        + " ".join(args.networks)
        + " --lengths "
        + " ".join(str(n) for n in args.lengths)
        + "` on "
        + f"{platform.machine()} ({platform.processor() or 'CPU'}), torch "
        + __import__("torch").__version__
        + f", {args.threads} thread(s); each row in its own process; extra peak = VmHWM after "
        "the call minus the RSS before it; networks as in the script's docstring.",
        "",
        "| network (layer, its samples) | samples | inference s | inference extra MiB "
        "| explain s | explain extra MiB | resize s | resize extra MiB | resize share of explain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} ({r['layer']}, {r['layer_samples']:,}) | {r['length']:,} "
            f"| {r['inference_s']:.3f} | {r['inference_mib']:.0f} "
            f"| {r['explain_s']:.3f} | {r['explain_mib']:.0f} | {r['resize_s']:.3f} "
            f"| {r['resize_mib']:.0f} | {r['resize_s'] / r['explain_s']:.1%} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
