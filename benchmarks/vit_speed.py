"""Time of explaining a vision transformer (timm ViT-S/16) on the CPU, against inference.

Measured in one process, interleaved round-robin so that changes of the machine's load hit every
method alike, for one batch of random images and the predicted class of each:

- ``inference``: a bare forward pass under ``torch.inference_mode()``;
- ``GradCAMPP`` of this package at ``blocks.11.norm1`` (the default layer), tokens laid on the
  14 x 14 grid automatically; a new explainer per call, layer named (no probing pass);
- the same with one explainer reused and the layer found by the default probe (cached after the
  first call);
- ``GradCAMPlusPlus`` of pytorch-grad-cam (when installed) at the same layer, with the
  ``reshape_transform`` its documentation gives for ViTs; a new explainer per call.

Times are medians over ``--repeats`` rounds after ``--warmup`` rounds, and ratios to the median
inference time of the same run. Random weights (``pretrained=False``): the time does not depend
on them.

Usage (from the repository root; the package is imported from ``src/`` of this checkout)::

    python benchmarks/vit_speed.py --threads 2 --batch 8 --repeats 5

The Markdown table is printed and written to ``benchmarks/results/vit_speed.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # measure this checkout, not an installed copy

import torch  # noqa: E402

from gradcampp import GradCAMPP  # noqa: E402

LAYER = "blocks.11.norm1"


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT-S/16 tokens ``(N, 197, 384)`` -> ``(N, 384, 14, 14)``: class token dropped."""
    return tokens[:, 1:].reshape(tokens.shape[0], 14, 14, -1).permute(0, 3, 1, 2)


def methods(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict[str, Callable]:
    """The measured calls, by row title."""

    def inference() -> object:
        with torch.inference_mode():
            return model(x)

    def ours_named() -> object:
        return GradCAMPP(model, conv_layer=LAYER).explain(x, labels)

    reused = GradCAMPP(model)

    def ours_default() -> object:
        return reused.explain(x, labels)

    calls: dict[str, Callable] = {
        "inference": inference,
        "gradcampp `GradCAMPP`, layer named, new explainer per call": ours_named,
        "gradcampp `GradCAMPP`, default layer, explainer reused": ours_default,
    }
    try:
        from pytorch_grad_cam import GradCAMPlusPlus
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return calls
    layer = dict(model.named_modules())[LAYER]
    targets = [ClassifierOutputTarget(int(c)) for c in labels]

    def theirs() -> object:
        cam = GradCAMPlusPlus(model=model, target_layers=[layer], reshape_transform=tokens_to_grid)
        try:
            return cam(input_tensor=x, targets=targets)
        finally:
            cam.activations_and_grads.release()

    calls["pytorch-grad-cam `GradCAMPlusPlus` (reshape_transform)"] = theirs
    return calls


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/vit_speed.md")
    args = parser.parse_args(argv)
    import timm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    x = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        labels = model(x).argmax(dim=1)
    calls = methods(model, x, labels)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(args.warmup + args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            if round_ >= args.warmup:
                times[name].append(elapsed)
        print(f"round {round_ + 1}/{args.warmup + args.repeats} done", flush=True)
    base = statistics.median(times["inference"])
    lines = [
        f"# ViT-S/16 on the CPU: batch {args.batch}, {args.threads} thread(s)",
        "",
        "| method | median time (s) | x inference |",
        "| --- | ---: | ---: |",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.3f} | {median / base:.2f} |")
    command = "python benchmarks/vit_speed.py " + shlex.join(argv or sys.argv[1:])
    lines += [
        "",
        f"- Command: `{command.strip()}`; medians of {args.repeats} rounds after "
        f"{args.warmup} warm-up round(s), methods interleaved round-robin.",
        f"- timm `vit_small_patch16_224`, random weights, inputs (batch, 3, 224, 224); one target "
        f"per image (the predicted class); layer `{LAYER}`.",
        f"- {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, timm {_version('timm')}, grad-cam {_version('grad-cam')}.",
    ]
    table = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return table


if __name__ == "__main__":
    main()
