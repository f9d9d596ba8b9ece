"""Where the time of one ``explain`` call goes: a per-stage profile against an inference pass.

For each case (torchvision architecture, batch size; seeded random weights, 224x224 inputs) the
script runs, interleaved round-robin, a bare inference pass (``torch.inference_mode``) and
``GradCAMPP.explain`` for one class per image and for ``TopK(5)``. Inside ``explain`` the stages
are timed by wrapping the functions that do them, for the length of the profile only:

- ``prepare``: input validation and conversion (``backend.prepare``);
- ``targets``: parsing the ``targets`` argument (``parse_targets``);
- ``forward``: the forward pass with the capturing hook (``capture`` minus the two stages below);
- ``scores``: checking the model's outputs against the targets and picking the scores;
- ``backward``: the gradients of the ``T`` scores with respect to the layer's output
  (``_gradients``; the table also gives it per target and names the path taken: one batched
  vector-Jacobian product for all targets, or one ``autograd.grad`` call per target);
- ``weights``: Grad-CAM++ channel weights (Eq. 19);
- ``map``: the weighted sum of the feature maps;
- ``resize``: bicubic upsampling to the input's size;
- ``rest``: everything else in ``explain`` (the finiteness check of the maps, clipping,
  concatenation, conversion of the result, the explainer's construction).

Times are process CPU time (all threads of this process; other processes on a shared machine do
not count) and wall time, medians over ``--repeats`` rounds after ``--warmup``. Stage medians are
taken stage by stage, so they need not add up exactly to the median total.

Usage (from the repository root; the package is imported from ``src/`` of this checkout)::

    python benchmarks/stage_profile.py                           # the four cases of issue 16
    python benchmarks/stage_profile.py --cases resnet50:1 vgg16:1 --repeats 5 --threads 2

(Not named ``profile.py``: run as a script, this folder comes first on ``sys.path``, where a
``profile`` module would shadow the standard library's, which torch imports.)

The Markdown table is printed and written to ``benchmarks/results/stage_profile.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # profile this checkout, not an installed copy
sys.path.insert(0, str(ROOT))
# OpenMP worker threads that spin while waiting burn CPU time whenever another process holds a core;
# passive waiting makes process CPU time count work only (set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torchvision  # noqa: E402

import gradcampp.explainers as explainers_module  # noqa: E402
from gradcampp import GradCAMPP  # noqa: E402
from gradcampp.backends import torch_backend  # noqa: E402
from gradcampp.targets import TargetPlan, TopK  # noqa: E402

CASES = ("resnet50:1", "efficientnet_b0:8", "mobilenet_v3_large:8", "vgg16:1")
MODES = ("one", "top5")
TOP_K = 5
STAGES = ("prepare", "targets", "forward", "scores", "backward", "weights", "map", "resize", "rest")


class Clock:
    """Accumulates wall and process CPU seconds per stage while ``active``."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.paths: list[str] = []

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()
        self.paths.clear()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu

    def timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return wrapper


@contextmanager
def patched(owner: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Replace ``owner.name`` by ``make(original)`` for the body; skipped if it does not exist."""
    if not hasattr(owner, name):
        yield
        return
    original = getattr(owner, name)
    own = name in vars(owner)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


def _path(name: str, original: Callable[..., Any], clock: Clock) -> Callable[..., Any]:
    """Record ``name`` when the gradient function ``original`` returns a result."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if result is not None:
            clock.paths.append(name)
        return result

    return wrapper


@contextmanager
def instrumented(clock: Clock) -> Iterator[None]:
    """Wrap the functions that do each stage of ``explain`` (module attributes, class methods)."""
    backend_cls = torch_backend.TorchBackend
    with ExitStack() as stack:
        enter = stack.enter_context
        enter(patched(backend_cls, "prepare", lambda f: clock.timed("prepare", f)))
        enter(patched(explainers_module, "parse_targets", lambda f: clock.timed("targets", f)))
        enter(patched(backend_cls, "capture", lambda f: clock.timed("capture", f)))
        enter(patched(TargetPlan, "check_outputs", lambda f: clock.timed("scores", f)))
        enter(patched(TargetPlan, "scores", lambda f: clock.timed("scores", f)))
        enter(patched(backend_cls, "_gradients", lambda f: clock.timed("backward", f)))
        for name, label in (("batched_gradients", "batched"), ("per_target_gradients", "loop")):
            enter(patched(torch_backend, name, lambda f, label=label: _path(label, f, clock)))
        enter(patched(GradCAMPP, "_weights", lambda f: clock.timed("weights", f)))
        enter(patched(explainers_module, "class_activation_map", lambda f: clock.timed("map", f)))
        enter(patched(explainers_module, "resize", lambda f: clock.timed("resize", f)))
        yield


def split_stages(measured: dict[str, float], total: float) -> dict[str, float]:
    """Per-stage seconds from the wrapped timings: forward and rest are what is left over."""
    stages = {name: measured.get(name, 0.0) for name in STAGES}
    capture = measured.get("capture", 0.0)
    stages["forward"] = capture - stages["scores"] - stages["backward"]
    accounted = sum(stages[name] for name in STAGES if name not in ("rest",))
    stages["rest"] = total - accounted
    return stages


def build(arch: str, batch: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, str]:
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None).eval()
    generator = torch.Generator().manual_seed(seed + batch)
    x = torch.randn(batch, 3, 224, 224, generator=generator)
    layer = GradCAMPP(model).backend.layer_name(x)
    return model, x, layer


def profile_case(
    arch: str, batch: int, repeats: int, warmup: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per-stage medians (CPU and wall) of each mode, and inference's, for one case."""
    model, x, layer = build(arch, batch, seed)
    with torch.inference_mode():
        classes = model(x).argmax(dim=1).clone()
    clock = Clock()
    samples: dict[str, list[tuple[float, float, dict[str, float], dict[str, float]]]] = {
        mode: [] for mode in ("inference", *MODES)
    }
    paths: dict[str, set[str]] = {mode: set() for mode in MODES}

    def run(mode: str) -> None:
        if mode == "inference":
            with torch.inference_mode():
                model(x)
            return
        cam = GradCAMPP(model, conv_layer=layer, batch_size=batch)
        cam.explain(x, classes if mode == "one" else TopK(TOP_K))

    jobs = ["inference", *MODES]
    for round_ in range(warmup + repeats):
        shift = round_ % len(jobs)
        for mode in [*jobs[shift:], *jobs[:shift]]:
            gc.collect()
            clock.reset()
            with instrumented(clock):
                wall, cpu = time.perf_counter(), time.process_time()
                run(mode)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_ < warmup:
                continue
            samples[mode].append(
                (wall, cpu, split_stages(clock.wall, wall), split_stages(clock.cpu, cpu))
            )
            if mode in paths:
                paths[mode].update(clock.paths)
    result: dict[str, dict[str, Any]] = {}
    for mode, values in samples.items():
        result[mode] = {
            "layer": layer,
            "wall": statistics.median(v[0] for v in values),
            "cpu": statistics.median(v[1] for v in values),
            "wall_stages": {s: statistics.median(v[2][s] for v in values) for s in STAGES},
            "cpu_stages": {s: statistics.median(v[3][s] for v in values) for s in STAGES},
            "path": ", ".join(sorted(paths.get(mode, ()))) or "-",
        }
    return result


def table(results: dict[tuple[str, int], dict[str, dict[str, Any]]], basis: str) -> list[str]:
    """One row per case and mode: ms per stage (``basis``: ``cpu`` or ``wall``), total, ratio."""
    header = ["model", "batch", "targets", *STAGES, "total", "inference", "x inference"]
    header += ["backward per target", "backward path"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for (arch, batch), modes in results.items():
        base = modes["inference"][basis]
        for mode in MODES:
            entry = modes[mode]
            stages = entry[f"{basis}_stages"]
            n_targets = 1 if mode == "one" else TOP_K
            cells = [arch, str(batch), "1" if mode == "one" else f"top-{TOP_K}"]
            cells += [f"{1000 * stages[s]:.1f}" for s in STAGES]
            cells += [f"{1000 * entry[basis]:.1f}", f"{1000 * base:.1f}"]
            cells += [f"{entry[basis] / base:.3f}x", f"{1000 * stages['backward'] / n_targets:.1f}"]
            cells.append(entry["path"])
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="ARCH:BATCH")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    default_out = ROOT / "benchmarks" / "results" / "stage_profile.md"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/stage_profile.py" + "".join(
        " " + shlex.quote(arg) for arg in (sys.argv[1:] if argv is None else argv)
    )
    started, load = time.time(), os.getloadavg()
    results: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for case in args.cases:
        arch, _, batch = case.partition(":")
        print(f"profiling {arch} batch {batch} ...", flush=True)
        results[(arch, int(batch))] = profile_case(
            arch, int(batch), args.repeats, args.warmup, args.seed
        )
    from benchmarks.speed import machine, versions

    minutes = (time.time() - started) / 60
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    layers = ", ".join(
        f"{arch} `{modes['inference']['layer']}`" for (arch, _), modes in results.items()
    )
    lines = [
        "# Where the time of `explain` goes",
        "",
        f"Command: `{command}` ({minutes:.0f} min, finished {now})",
        "",
        f"Machine: {machine('cpu')}.",
        "",
        "Load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{v:.2f}" for v in load)
        + "; at the end: "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        + ".",
        "",
        f"Versions: {versions()}.",
        "",
        f"GradCAMPP, median of {args.repeats} interleaved rounds after {args.warmup} warm-up"
        f" round(s); inputs 224x224, seeded random weights; explained layers: {layers}.",
        "Milliseconds per stage; `x inference` is the whole call over a bare inference pass of the"
        " same round set. Stage medians are taken one by one and need not add up to the total.",
        "",
        "## Process CPU time (ms)",
        "",
        *table(results, "cpu"),
        "",
        "## Wall time (ms)",
        "",
        *table(results, "wall"),
        "",
        "Stages: " + __doc__.split("the length of the profile only:")[1].split("\n\nTimes")[0],
    ]
    text = "\n".join(lines).rstrip() + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
