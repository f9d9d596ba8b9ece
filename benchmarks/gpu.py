"""Time and peak CUDA memory of explaining a batch on a GPU, against inference and pytorch-grad-cam.

One run covers, for each model (torchvision ResNet-50; timm ViT-S/16 when timm is installed),
batch size (1, 8, 64) and precision (float32, bfloat16; seeded random weights, 224x224 inputs):

- ``inference``: a forward pass under ``torch.inference_mode()``;
- ``ours``: ``GradCAMPP.explain`` for the predicted class of each image, and for ``TopK(5)``;
- ``pytorch-grad-cam``: ``GradCAMPlusPlus`` for the predicted class (one call) and for the top-5
  classes (five calls, one class per image each), when the package is installed.

Times are medians over ``--repeats`` interleaved rounds after ``--warmup`` rounds, each call
bracketed by ``torch.cuda.synchronize()``; the ratio divides by the inference time of the same
case. Peak memory is ``torch.cuda.max_memory_allocated()`` during one call minus the memory
allocated before it (the model and inputs), also as a ratio to inference's. A method that fails
(pytorch-grad-cam cannot turn bfloat16 maps into NumPy, for instance) gets its error in the table
instead of numbers; the run goes on.

Usage (from the repository root, on a machine with a CUDA device)::

    python benchmarks/gpu.py                       # everything, about 5 minutes on one GPU
    python benchmarks/gpu.py --models resnet50 --batches 8 --dtypes float32 --repeats 5

Without a CUDA device the script says so and exits with status 0 without measuring anything. The
Markdown table is printed and written to ``benchmarks/results/gpu.md`` (``--out``), rewritten after
every case so that an interrupted run leaves what it measured.

End to end (``--end-to-end``): files in, files out, as ``gradcampp explain`` runs them. For each
model, ``--images`` photo-sized JPEGs (500x375) are written, then read to the 224 px view
(``read_view``), explained on ``--device`` in batches of ``--batch-size`` and written
(``--format files`` with overlays, the default outputs), each stage timed on its own (wall time;
the device synchronised around each batch), then the whole run again through the local engine.
The table gives each stage's images/s, the run's, and the CPU cores that keep the device busy,
``explain rate x (read + write seconds per image on one core)``. It runs on a CPU as well
(``--device cpu``), to try it where there is no GPU::

    python benchmarks/gpu.py --end-to-end                       # on CUDA
    python benchmarks/gpu.py --end-to-end --device cpu --images 8 --models resnet50
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # measure this checkout, not an installed copy

import torch  # noqa: E402
import torchvision  # noqa: E402

from gradcampp import GradCAMPP  # noqa: E402
from gradcampp.targets import TopK  # noqa: E402

MODELS = ("resnet50", "vit_small_patch16_224")
BATCHES = (1, 8, 64)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOP_K = 5
MIB = 1024 * 1024
VIT_GRID = 14  # 224 / 16 patches per side
VIT_LAYER = "blocks.11.norm1"
DEVICE = "cuda"


def vit_tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT-S/16 tokens ``(N, 1 + 14*14, D)`` -> maps ``(N, D, 14, 14)``, class token dropped."""
    n, length, dim = tokens.shape
    grid = tokens[:, length - VIT_GRID * VIT_GRID :, :].reshape(n, VIT_GRID, VIT_GRID, dim)
    return grid.permute(0, 3, 1, 2)


def build(name: str, dtype: torch.dtype, seed: int) -> tuple[torch.nn.Module, str]:
    """The model on the GPU in ``dtype`` with seeded random weights, and the explained layer."""
    torch.manual_seed(seed)
    if name == "resnet50":
        model = torchvision.models.resnet50(weights=None)
        layer = "layer4"
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
        layer = VIT_LAYER
    return model.eval().to(device=DEVICE, dtype=dtype), layer


def ours(model: torch.nn.Module, layer: str, name: str, batch: int) -> Callable[..., Any]:
    """A call ``(x, targets) -> maps`` of GradCAMPP, the explainer built as a user would."""
    options: dict[str, Any] = {"conv_layer": layer, "batch_size": batch}
    if name != "resnet50" and "reshape_transform" in inspect.signature(GradCAMPP).parameters:
        options["reshape_transform"] = vit_tokens_to_grid
    cam = GradCAMPP(model, **options)
    return cam.explain


def peer(model: torch.nn.Module, layer: str, name: str) -> Any:
    from pytorch_grad_cam import GradCAMPlusPlus

    target = dict(model.named_modules())[layer]
    transform = None if name == "resnet50" else vit_tokens_to_grid
    return GradCAMPlusPlus(model=model, target_layers=[target], reshape_transform=transform)


def jobs_for(
    model: torch.nn.Module, layer: str, name: str, x: torch.Tensor, top: torch.Tensor
) -> dict[str, Callable[[], Any]]:
    """The calls to time for one case, by label."""
    explain = ours(model, layer, name, x.shape[0])
    classes = top[:, 0]

    def inference() -> Any:
        with torch.inference_mode():
            return model(x)

    jobs: dict[str, Callable[[], Any]] = {
        "inference": inference,
        "ours, 1 class": lambda: explain(x, classes),
        f"ours, top-{TOP_K}": lambda: explain(x, TopK(TOP_K)),
    }
    if importlib.util.find_spec("pytorch_grad_cam") is not None:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = peer(model, layer, name)

        def grad_cam(columns: Sequence[torch.Tensor]) -> Any:
            return [cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in col])
                    for col in columns]  # fmt: skip

        jobs["pytorch-grad-cam, 1 class"] = lambda: grad_cam([classes])
        jobs[f"pytorch-grad-cam, top-{TOP_K}"] = lambda: grad_cam(list(top.T))
    return jobs


def measure(jobs: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, Any]:
    """Median seconds (interleaved rounds) and extra peak memory of each job, or its error."""
    times: dict[str, list[float]] = {label: [] for label in jobs}
    errors: dict[str, str] = {}
    memory: dict[str, float] = {}
    for label, call in jobs.items():  # peak memory first, one call each, alone
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            result = call()
            torch.cuda.synchronize()
            memory[label] = (torch.cuda.max_memory_allocated() - before) / MIB
            del result
        except Exception as error:  # recorded in the table; the other methods still run
            errors[label] = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
    labels = [label for label in jobs if label not in errors]
    for round_ in range(warmup + repeats):
        shift = round_ % len(labels)
        for label in [*labels[shift:], *labels[:shift]]:
            torch.cuda.synchronize()
            start = time.perf_counter()
            result = jobs[label]()
            torch.cuda.synchronize()
            if round_ >= warmup:
                times[label].append(time.perf_counter() - start)
            del result
    return {
        "time": {label: statistics.median(times[label]) for label in labels},
        "memory": memory,
        "errors": errors,
    }


def rows_for(name: str, batch: int, dtype: str, result: dict[str, Any]) -> list[list[str]]:
    base_time = result["time"].get("inference")
    base_memory = result["memory"].get("inference")
    rows = []
    for label in [*result["time"], *result["errors"]]:
        if label in result["errors"]:
            rows.append([name, str(batch), dtype, label, "failed: " + result["errors"][label],
                         "", "", "", ""])  # fmt: skip
            continue
        seconds, mib = result["time"][label], result["memory"][label]
        rows.append([
            name, str(batch), dtype, label, f"{1000 * seconds:.2f}",
            f"{seconds / base_time:.2f}x" if base_time else "n/a", f"{batch / seconds:.0f}",
            f"{mib:.0f}", f"{mib / base_memory:.2f}x" if base_memory else "n/a",
        ])  # fmt: skip
    return rows


def write(path: Path, command: str, args: argparse.Namespace, rows: list[list[str]],
          notes: list[str], progress: str | None) -> str:  # fmt: skip
    header = ["model", "batch", "dtype", "method", "ms", "x inference", "images/s",
              "extra peak MiB", "x inference memory"]  # fmt: skip
    from benchmarks.speed import versions

    lines = [
        "# Explaining on a GPU: time and peak CUDA memory",
        "",
        *([f"**Partial: {progress}.**", ""] if progress else []),
        f"Command: `{command}` (finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"Device: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, cuDNN"
        f" {torch.backends.cudnn.version()}); TF32 matmul: "
        f"{torch.backends.cuda.matmul.allow_tf32}, TF32 cuDNN: {torch.backends.cudnn.allow_tf32}.",
        "",
        f"Versions: {versions()}.",
        "",
        f"Median of {args.repeats} interleaved rounds after {args.warmup} warm-up round(s);"
        " 224x224 inputs, seeded random weights.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "## Notes",
        "",
        "- Extra peak memory: `torch.cuda.max_memory_allocated()` during one call minus the memory"
        " allocated before it.",
        f"- Top-{TOP_K}: ours is one forward pass and one vectorised backward pass through the"
        f" layers after the explained one; pytorch-grad-cam makes {TOP_K} calls (a forward and a"
        " full backward pass each).",
        f"- ViT-S/16 is explained at `{VIT_LAYER}`, its tokens laid on the 14x14 patch grid (class"
        " token dropped) by the same function for both libraries.",
        *notes,
    ]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def _vit_small() -> torch.nn.Module:
    import timm

    return timm.create_model("vit_small_patch16_224", pretrained=False)


def end_to_end(args: argparse.Namespace, command: str) -> str:
    """Files in, files out on ``args.device``: each stage's rate and the whole run's."""
    import shutil
    import tempfile

    import numpy as np
    from PIL import Image

    from gradcampp.engines.local import run_local
    from gradcampp.engines.recipe import ModelRecipe
    from gradcampp.engines.work import ImageWork, Settings
    from gradcampp.images import read_view

    device = torch.device(args.device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    work = Path(tempfile.mkdtemp(prefix="gradcampp-e2e-"))
    rows: list[list[str]] = []
    try:
        rng = np.random.default_rng(args.seed)
        paths = []
        for i in range(args.images):  # smooth photos with a little sensor noise, JPEG q90
            coarse = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
            smooth = np.asarray(
                Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
            )
            noisy = np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)
            paths.append(work / f"photo-{i:04d}.jpg")
            Image.fromarray(noisy).save(paths[-1], quality=90)
        for name in args.models:
            if name == "resnet50":
                recipe, label = ModelRecipe("torchvision:resnet50", device=args.device), "ResNet-50"
            else:
                if importlib.util.find_spec("timm") is None:
                    continue
                recipe, label = ModelRecipe(_vit_small, device=args.device), "ViT-S/16"
            torch.manual_seed(args.seed)
            loaded = recipe.load()
            settings = Settings(batch_size=args.batch_size)
            image_work = ImageWork(loaded, settings)
            out = work / f"out-{name}"
            out.mkdir()
            start = time.perf_counter()
            views = [read_view(p, loaded.preprocess) for p in paths]
            read_s = time.perf_counter() - start
            image_work.explain(views[: args.batch_size])  # warm-up
            explain_s = write_s = 0.0
            for g in range(0, len(paths), args.batch_size):
                group = views[g : g + args.batch_size]
                synchronize()
                start = time.perf_counter()
                found = image_work.explain(group)
                synchronize()
                explain_s += time.perf_counter() - start
                named = [(paths[g + i], paths[g + i].stem, v) for i, v in enumerate(group)]
                start = time.perf_counter()
                image_work.write(named, found, out)
                write_s += time.perf_counter() - start
            shutil.rmtree(out)
            start = time.perf_counter()
            result = run_local(loaded, paths, out, settings, progress=False)
            run_s = time.perf_counter() - start
            n = len(paths)
            if len(result.records) != n:
                raise RuntimeError(f"{label}: {n - len(result.records)} image(s) not written")
            explain_rate = n / explain_s
            cores = explain_rate * (read_s + write_s) / n
            rows.append([
                label, str(args.batch_size), f"{n / read_s:.0f}", f"{explain_rate:.1f}",
                f"{n / write_s:.0f}", f"{n / run_s:.1f}", f"{cores:.1f}",
            ])  # fmt: skip
            del loaded, image_work
    finally:
        shutil.rmtree(work, ignore_errors=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = ["model", "batch", "read img/s (1 core)", "explain img/s", "write img/s (1 core)",
              "whole run img/s", "cores to keep the device busy"]  # fmt: skip
    lines = [
        "# End to end: files in, files out",
        "",
        f"Command: `{command}`; device: {where}; {args.images} 500x375 JPEGs, 224 px views,"
        " `--format files` with overlays (the default outputs); seeded random weights;"
        f" {torch.get_num_threads()} PyTorch thread(s). Read and write run in one thread;"
        " cores = explain rate x (read + write seconds per image).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--end-to-end", action="store_true", help="files in, files out (see the docstring)"
    )
    parser.add_argument("--device", default=DEVICE, help="torch device for --end-to-end (cuda)")
    parser.add_argument("--images", type=int, default=256, help="images for --end-to-end")
    parser.add_argument("--batch-size", type=int, default=64, help="batch for --end-to-end")
    args = parser.parse_args(argv)
    if args.out is None:
        name = "gpu_end_to_end.md" if args.end_to_end else "gpu.md"
        args.out = ROOT / "benchmarks" / "results" / name
    if args.end_to_end and (args.images < 1 or args.batch_size < 1):
        parser.error("--images and --batch-size must be >= 1")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.end_to_end:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print("benchmarks/gpu.py: no CUDA device is available here (try --device cpu).")
            return 0
        command = "python benchmarks/gpu.py" + "".join(
            " " + shlex.quote(arg) for arg in (sys.argv[1:] if argv is None else argv)
        )
        print(end_to_end(args, command))
        return 0
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device is available here; nothing was measured.")
        return 0
    sys.path.insert(0, str(ROOT))
    command = "python benchmarks/gpu.py" + "".join(
        " " + shlex.quote(arg) for arg in (sys.argv[1:] if argv is None else argv)
    )
    notes: list[str] = []
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        notes.append("- pytorch-grad-cam is not installed: not measured (`pip install .[bench]`).")
    models = list(args.models)
    if "vit_small_patch16_224" in models and importlib.util.find_spec("timm") is None:
        models.remove("vit_small_patch16_224")
        notes.append("- timm is not installed: ViT-S/16 not measured (`pip install timm`).")
    cases = [(m, b, d) for m in models for d in args.dtypes for b in args.batches]
    if not cases:
        print("benchmarks/gpu.py: nothing to measure (" + " ".join(notes) + ")")
        return 0
    rows: list[list[str]] = []
    text = ""
    for done, (name, batch, dtype) in enumerate(cases, start=1):
        print(f"{name} batch {batch} {dtype} ...", flush=True)
        model, layer = build(name, DTYPES[dtype], args.seed)
        generator = torch.Generator().manual_seed(args.seed + batch)
        x = torch.randn(batch, 3, 224, 224, generator=generator).to(DEVICE, DTYPES[dtype])
        with torch.inference_mode():
            top = model(x).topk(TOP_K, dim=1).indices.clone()
        result = measure(jobs_for(model, layer, name, x, top), args.repeats, args.warmup)
        rows += rows_for(name, batch, dtype, result)
        del model, x
        torch.cuda.empty_cache()
        progress = None if done == len(cases) else f"{done} of {len(cases)} cases done"
        text = write(args.out, command, args, rows, notes, progress)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
