"""Time of one explanation of a ``torch.compile``d model against the same eager model.

ResNet-18 (random weights), a batch of 2 images of 224 x 224, on the CPU, ``conv_layer="layer4"``.
A compiled model is explained through the eager module it wraps, so both lines should read the
same; the maps are compared too. Each method is warmed up once, then timed ``--repeats`` times in
turns; the medians of wall-clock and process CPU time are printed.

Usage: ``PYTHONPATH=src python benchmarks/compiled_speed.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from gradcampp import GradCAMPP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    eager = torchvision.models.resnet18(weights=None).eval()
    compiled = torch.compile(eager)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, 7])
    methods = {
        "eager ResNet-18": GradCAMPP(eager, conv_layer="layer4"),
        "torch.compile(ResNet-18)": GradCAMPP(compiled, conv_layer="_orig_mod.layer4"),
    }
    maps = {name: explainer.explain(x, labels) for name, explainer in methods.items()}
    difference = float((maps["eager ResNet-18"] - maps["torch.compile(ResNet-18)"]).abs().max())
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, explainer in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            explainer.explain(x, labels)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    print("| model | wall s (median) | CPU s (median) |")
    print("| --- | --- | --- |")
    for name in methods:
        print(
            f"| {name} | {statistics.median(wall[name]):.3f} | {statistics.median(cpu[name]):.3f} |"
        )
    print(f"\nlargest difference between the two maps: {difference:.2e}")


if __name__ == "__main__":
    main()
