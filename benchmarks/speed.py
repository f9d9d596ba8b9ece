"""Time and peak memory of explaining a batch, against inference and the PyTorch peers.

For each case (architecture, batch size) the script measures, in one process and interleaved
round-robin so that changes of the machine's load hit every method alike:

- ``inference``: a bare forward pass under ``torch.inference_mode()``;
- ``GradCAMPP`` and ``GradCAM`` from this package;
- ``GradCAMPlusPlus`` of pytorch-grad-cam and ``GradCAMpp`` of torch-cam (when installed);
- ``dropin``: our ``gradcampp.pytorch_grad_cam.GradCAMPlusPlus``, called exactly as
  pytorch-grad-cam's (its default, reproducing variant);

for one target per image (the predicted class, passed as indices to every method) and for the
top-5 classes of each image (ours: ``TopK(5)``; the peers explain one class per image and call,
so they run five times), and, for the two pytorch-grad-cam interfaces only, one target per
image with ``aug_smooth=True`` (mode ``aug``: six augmented copies). Times are medians over
``--repeats`` rounds after ``--warmup`` rounds, also given as a ratio to the inference time of
the same run. Peak memory is measured with each method alone in a fresh process: ``VmHWM`` of
``/proc/self/status`` is reset after the model and inputs are loaded and read after the work
(on CUDA: ``torch.cuda.max_memory_allocated``).

Usage (from the repository root; the package is imported from ``src/`` of this checkout)::

    python benchmarks/speed.py                      # full grid: 3 models x batch 1, 8, 32
    python benchmarks/speed.py --quick              # ResNet-50, batch 8
    python benchmarks/speed.py --archs resnet50 --batches 8 32 --repeats 3
    python benchmarks/speed.py --device cuda --archs resnet50 --batches 64
    python benchmarks/speed.py --quick --methods dropin pytorch-grad-cam --modes one aug \
        --memory-batches --no-keras --out benchmarks/results/speed_dropin.md  # the drop-in

The Markdown table is printed and written to ``benchmarks/results/speed.md`` (``--out``).

An optional Keras section is appended when ``benchmarks/keras_speed.py`` exists: it must define
``rows(archs, batches, repeats, warmup) -> list[dict[str, object]]`` (any subset of those keyword
arguments), one dict per table row, the keys being the column titles.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # measure this checkout, not an installed copy
# OpenMP worker threads that spin while they wait burn CPU time whenever another process holds a
# core, which makes process CPU time on a shared machine meaningless; passive waiting counts work
# only. Set before torch is imported; the memory processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torchvision  # noqa: E402

from gradcampp import GradCAM, GradCAMPP  # noqa: E402
from gradcampp.targets import TopK  # noqa: E402

ARCHS = ("resnet50", "vgg16", "mobilenet_v3_large", "efficientnet_b0")
BATCHES = (1, 8, 32)
MODES = ("one", "top5", "aug")
DEFAULT_MODES = ("one", "top5")
METHODS = ("gradcampp", "gradcam", "pytorch-grad-cam", "torch-cam", "dropin")
DEFAULT_METHODS = ("gradcampp", "gradcam", "pytorch-grad-cam", "torch-cam")
#: Methods with pytorch-grad-cam's interface, the only ones that offer ``aug_smooth``.
AUG_METHODS = ("pytorch-grad-cam", "dropin")
LABELS = {
    "inference": "inference (`torch.inference_mode`)",
    "gradcampp": "**ours** GradCAMPP",
    "gradcam": "**ours** GradCAM",
    "pytorch-grad-cam": "pytorch-grad-cam GradCAMPlusPlus",
    "torch-cam": "torch-cam GradCAMpp",
    "dropin": "**ours** drop-in `gradcampp.pytorch_grad_cam.GradCAMPlusPlus`",
}
PEER_MODULES = {"pytorch-grad-cam": "pytorch_grad_cam", "torch-cam": "torchcam"}
TOP_K = 5
MIB = 1024 * 1024
TARGET_LABELS = {"one": "1", "top5": f"top-{TOP_K}", "aug": "1, aug_smooth"}

# Targets of the design (issue 16), checked in the summary table.
ONE_TARGET_MAX = 1.05
TOP5_MAX = 1.15
PEER_SPEEDUP_MIN = 2.5
MEMORY_MAX = 1.10


# --------------------------------------------------------------------------- the work itself


@dataclass
class Case:
    """One model with its inputs, explained layer and target classes."""

    arch: str
    model: torch.nn.Module
    x: torch.Tensor
    layer: torch.nn.Module
    layer_name: str
    top: torch.Tensor  # (N, TOP_K) class indices, best first

    @property
    def classes(self) -> torch.Tensor:
        """The predicted class of each image, ``(N,)``."""
        return self.top[:, 0]


def build_case(arch: str, batch: int, device: str, seed: int) -> Case:
    """Seeded random weights and inputs ``(batch, 3, 224, 224)``; the layer our probe picks."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None).eval().to(device)
    generator = torch.Generator().manual_seed(seed + batch)
    x = torch.randn(batch, 3, 224, 224, generator=generator).to(device)
    backend = GradCAMPP(model).backend
    layer_name = backend.layer_name(x)
    with torch.inference_mode():
        top = model(x).topk(TOP_K, dim=1).indices
    top = top.clone()  # a normal tensor, usable outside inference mode
    return Case(arch, model, x, dict(model.named_modules())[layer_name], layer_name, top)


def inference(case: Case) -> Any:
    with torch.inference_mode():
        return case.model(case.x)


def ours(explainer: type[GradCAM], case: Case, mode: str) -> Any:
    # Built per call like the peers; with the layer given, construction costs no forward pass.
    cam = explainer(case.model, conv_layer=case.layer_name, batch_size=case.x.shape[0])
    return cam.explain(case.x, case.classes if mode == "one" else TopK(TOP_K))


def pytorch_grad_cam(case: Case, mode: str, package: str = "pytorch_grad_cam") -> Any:
    """pytorch-grad-cam's call, from ``package`` (``gradcampp.pytorch_grad_cam``: the drop-in)."""
    cam_class = importlib.import_module(package).GradCAMPlusPlus
    target_class = importlib.import_module(f"{package}.utils.model_targets").ClassifierOutputTarget
    columns = list(case.top.T) if mode == "top5" else [case.classes]
    maps = []
    with cam_class(model=case.model, target_layers=[case.layer]) as cam:
        for column in columns:  # one class per image and call: a forward and backward each
            targets = [target_class(int(c)) for c in column]
            maps.append(cam(input_tensor=case.x, targets=targets, aug_smooth=mode == "aug"))
    return maps


def torch_cam(case: Case, mode: str) -> Any:
    from torchcam.methods import GradCAMpp

    columns = [case.classes] if mode == "one" else list(case.top.T)
    maps = []
    with GradCAMpp(case.model, target_layer=case.layer_name) as cam:
        scores = case.model(case.x)  # one forward pass, its graph kept for every class
        for i, column in enumerate(columns):
            keep = i < len(columns) - 1
            maps.append(cam(class_idx=column.tolist(), scores=scores, retain_graph=keep))
    return maps


def work(method: str, case: Case, mode: str | None) -> Callable[[], Any]:
    """A call that runs ``method`` once on ``case`` (``mode`` is ignored for inference)."""
    if method == "inference":
        return lambda: inference(case)
    if method == "gradcampp":
        return lambda: ours(GradCAMPP, case, mode)
    if method == "gradcam":
        return lambda: ours(GradCAM, case, mode)
    if method == "pytorch-grad-cam":
        return lambda: pytorch_grad_cam(case, mode)
    if method == "dropin":
        return lambda: pytorch_grad_cam(case, mode, "gradcampp.pytorch_grad_cam")
    if method == "torch-cam":
        return lambda: torch_cam(case, mode)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- timing


Job = tuple[str, str | None]  # (method, mode); mode None for inference
Times = dict[Job, list[tuple[float, float]]]  # (wall seconds, process CPU seconds) per call


def time_case(case: Case, jobs: Sequence[Job], repeats: int, warmup: int, device: str) -> Times:
    """Wall and process CPU seconds per call of each job, ``repeats`` rounds after ``warmup``.

    Each round runs every job once; the order is rotated from round to round so that no job
    always follows the same one. Process CPU time counts the work of all this process's threads
    and not the time other processes held the cores, so its ratios hold up on a loaded machine.
    """
    calls = {job: work(job[0], case, job[1]) for job in jobs}
    times: Times = {job: [] for job in jobs}
    for round_ in range(warmup + repeats):
        shift = round_ % len(jobs)
        for job in [*jobs[shift:], *jobs[:shift]]:
            gc.collect()
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            result = calls[job]()
            synchronize(device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            del result
            if round_ >= warmup:
                times[job].append((wall, cpu))
    return times


def medians(times: Times, which: int) -> dict[Job, float]:
    """Median wall (``which=0``) or CPU (``which=1``) seconds of each job."""
    return {job: statistics.median(t[which] for t in values) for job, values in times.items()}


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _release_free_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so that the baseline holds no free blocks."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current VmRSS
        return True
    except OSError:
        return False


def memory_child(
    arch: str, batch: int, method: str, mode: str | None, device: str, seed: int, runs: int
) -> dict[str, Any]:
    """Extra peak memory (MiB) of ``runs`` calls of one method over the loaded model and inputs."""
    case = build_case(arch, batch, device, seed)
    call = work(method, case, mode)
    gc.collect()
    if device.startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        results = [call() for _ in range(runs)]
        synchronize(device)
        extra = torch.cuda.max_memory_allocated() - before
        return {"extra_mib": extra / MIB, "reset": True}
    _release_free_heap()
    reset = _reset_peak_rss()
    before = _status_kib("VmHWM")
    results = [call() for _ in range(runs)]
    after = _status_kib("VmHWM")
    del results
    return {"extra_mib": (after - before) / 1024, "reset": reset, "before_mib": before / 1024}


def measure_memory(
    arch: str, batch: int, method: str, mode: str | None, args: argparse.Namespace
) -> float | None:
    """Run ``memory_child`` in a fresh interpreter; ``None`` (and a message) if it fails."""
    command = [
        sys.executable, __file__, "--memory-child",
        json.dumps({"arch": arch, "batch": batch, "method": method, "mode": mode,
                    "device": args.device, "seed": args.seed, "runs": args.memory_runs}),
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"memory run failed for {arch} b{batch} {method} {mode}:\n{done.stderr[-2000:]}")
        return None
    result = json.loads(lines[-1])
    if not result["reset"]:
        print("note: /proc/self/clear_refs is not writable; peaks include the model's loading")
    return result["extra_mib"]


# --------------------------------------------------------------------------- the tables


def _available(method: str) -> bool:
    module = PEER_MODULES.get(method)
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    commit = done.stdout.strip() or "unknown"
    return commit + (" (with local changes)" if dirty.stdout.strip() else "")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{_cpu_name()}, {os.cpu_count()} cores, {total:.0f} GiB RAM, "
        f"torch threads: {torch.get_num_threads()}, {platform.system()} {platform.release()}"
    )


def versions() -> str:
    names = ["torch", "torchvision", "numpy", "grad-cam", "torchcam"]
    parts = [f"Python {platform.python_version()}"]
    parts += [f"{name} {_version(name)}" for name in names]
    parts.append(f"gradcampp {_version('gradcampp')} at commit {_git_commit()}")
    return ", ".join(parts)


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def result_rows(
    arch: str, batch: int, jobs: Sequence[Job], times: Times,
    memory: dict[Job, float | None], layer_name: str,
) -> list[list[str]]:  # fmt: skip
    """Table rows: one per job, with times and memory relative to inference."""
    wall, cpu = medians(times, 0), medians(times, 1)
    base = ("inference", None)
    base_memory = memory.get(base)
    rows = []
    for job in jobs:
        method, mode = job
        extra = memory.get(job)
        memory_ratio = None
        if extra is not None and base_memory:
            memory_ratio = extra / base_memory
        targets = "-" if mode is None else TARGET_LABELS[mode]
        first = method == "inference"
        rows.append([
            arch if first else "", str(batch), f"`{layer_name}`" if first else "", targets,
            LABELS[method], f"{wall[job]:.3f}", f"{wall[job] / wall[base]:.2f}x",
            f"{cpu[job]:.3f}", f"{cpu[job] / cpu[base]:.2f}x", f"{batch / wall[job]:.1f}",
            _cell(extra, ".0f"), "n/a" if memory_ratio is None else f"{memory_ratio:.2f}x",
        ])  # fmt: skip
    return rows


def check_rows(
    arch: str, batch: int, times: Times, memory: dict[Job, float | None], basis: int
) -> list[list[str]]:
    """The design targets for one case: value, bound, met or not.

    ``basis`` picks the time that decides: 0 wall, 1 process CPU time; both are shown.
    """
    timed = [medians(times, 0), medians(times, 1)]
    base = ("inference", None)
    checks: list[tuple[str, tuple[float, float] | float, str, float]] = []

    def ratio(job: Job, over: Job) -> tuple[float, float]:
        return timed[0][job] / timed[0][over], timed[1][job] / timed[1][over]

    for method in ("gradcampp", "gradcam"):
        name = LABELS[method].replace("**", "")
        if (method, "one") in times:
            checks.append((f"{name}, 1 target: time / inference", ratio((method, "one"), base),
                           "<=", ONE_TARGET_MAX))  # fmt: skip
        if (method, "top5") in times:
            checks.append((f"{name}, top-{TOP_K}: time / inference",
                           ratio((method, "top5"), base), "<=", TOP5_MAX))  # fmt: skip
    for mode in MODES:
        for ours, name in (("gradcampp", "ours GradCAMPP"), ("dropin", "the drop-in")):
            peer, us = ("pytorch-grad-cam", mode), (ours, mode)
            if peer in times and us in times:
                checks.append((f"speed-up of {name} over pytorch-grad-cam, {TARGET_LABELS[mode]}",
                               ratio(peer, us), ">=", PEER_SPEEDUP_MIN))  # fmt: skip
    base_memory = memory.get(base)
    if batch == 32 and base_memory:
        for method in ("gradcampp", "gradcam"):
            for mode in MODES:
                extra = memory.get((method, mode))
                if extra is not None:
                    name = LABELS[method].replace("**", "")
                    label = "1 target" if mode == "one" else f"top-{TOP_K}"
                    checks.append((f"{name}, {label}: extra peak memory / inference's",
                                   extra / base_memory, "<=", MEMORY_MAX))  # fmt: skip
    rows = []
    for label, value, sign, bound in checks:
        if isinstance(value, tuple):
            decisive = value[basis]
            shown = f"{value[1]:.2f} (wall {value[0]:.2f})"
            if basis == 0:
                shown = f"{value[0]:.2f} (CPU {value[1]:.2f})"
        else:
            decisive, shown = value, f"{value:.2f}"
        met = decisive <= bound if sign == "<=" else decisive >= bound
        rows.append([arch, str(batch), label, shown, f"{sign} {bound}",
                     "yes" if met else "**no**"])  # fmt: skip
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- Keras (optional)


def keras_section(args: argparse.Namespace) -> list[str]:
    """The rows of ``benchmarks/keras_speed.py`` as a table, or a note when it is absent."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        keras_speed = importlib.import_module("keras_speed")
    except ModuleNotFoundError as error:
        if error.name != "keras_speed":
            raise
        return ["", "Keras backend: not measured (`benchmarks/keras_speed.py` is not present)."]
    offered = {"archs": args.archs, "batches": args.batches, "repeats": args.repeats,
               "warmup": args.warmup}  # fmt: skip
    accepted = inspect.signature(keras_speed.rows).parameters
    rows = keras_speed.rows(**{key: value for key, value in offered.items() if key in accepted})
    if not rows:
        return ["", "Keras backend: `keras_speed.rows` returned no rows."]
    header = list(rows[0])
    body = [
        [
            _cell(v, ".3f") if isinstance(v, float) else str(v)
            for v in (row.get(k, "") for k in header)
        ]
        for row in rows
    ]
    return [
        "",
        "### Keras backend (from `benchmarks/keras_speed.py`)",
        "",
        *markdown_table(header, body),
    ]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--cases", nargs="+", default=None, metavar="ARCH:BATCH",
                        help="ARCH:BATCH pairs instead of --archs x --batches")  # fmt: skip
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES,
                        help="one: one target per image; top5: the 5 best per image; aug: "
                        "one target, aug_smooth=True (pytorch-grad-cam's interface)")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--quick", action="store_true", help="ResNet-50, batch 8 only")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--memory-batches", nargs="*", type=int, default=None,
                        help="batches whose peak memory is measured (default: 32, or the "
                        "largest batch run when 32 is not; none: skip memory)")  # fmt: skip
    parser.add_argument("--memory-runs", type=int, default=1,
                        help="calls of the method in each memory process")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-keras", action="store_true", help="skip the optional Keras section")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.md")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.batches = ["resnet50"], [8]
    if args.cases:
        pairs = [case.partition(":") for case in args.cases]
        if any(arch not in ARCHS or not batch.isdigit() for arch, _, batch in pairs):
            parser.error(f"--cases takes ARCH:BATCH with ARCH in {ARCHS}, got {args.cases}")
        args.cases = [(arch, int(batch)) for arch, _, batch in pairs]
        args.batches = sorted({batch for _, batch in args.cases})
    else:
        args.cases = [(arch, batch) for arch in args.archs for batch in args.batches]
    if args.memory_batches is None:
        args.memory_batches = [32] if 32 in args.batches else [max(args.batches)]
    if args.repeats < 1 or args.warmup < 0 or args.memory_runs < 1:
        parser.error("--repeats and --memory-runs must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        spec = json.loads(args.memory_child)
        print(json.dumps(memory_child(**spec)))
        return 0

    methods = [method for method in args.methods if _available(method)]
    missing = [method for method in args.methods if method not in methods]
    jobs: list[Job] = [("inference", None)]
    jobs += [
        (method, mode)
        for mode in args.modes
        for method in methods
        if mode != "aug" or method in AUG_METHODS
    ]
    command = "python benchmarks/speed.py" + "".join(
        " " + shlex.quote(arg) for arg in (sys.argv[1:] if argv is None else argv)
    )
    report = Report(command, args, missing, os.getloadavg(), time.time())
    cases = args.cases
    for done, (arch, batch) in enumerate(cases, start=1):
        case = build_case(arch, batch, args.device, args.seed)
        print(f"timing {arch} batch {batch} (layer {case.layer_name}) ...", flush=True)
        times = time_case(case, jobs, args.repeats, args.warmup, args.device)
        layer_name = case.layer_name
        del case
        memory: dict[Job, float | None] = {}
        if batch in args.memory_batches:
            print(f"memory {arch} batch {batch} ...", flush=True)
            for method, mode in jobs:
                memory[(method, mode)] = measure_memory(arch, batch, method, mode, args)
        report.rows += result_rows(arch, batch, jobs, times, memory, layer_name)
        basis = 0 if args.device.startswith("cuda") else 1
        report.checks += check_rows(arch, batch, times, memory, basis)
        if done < len(cases):  # a partial table survives an interrupted run
            report.write(f"{done} of {len(cases)} cases done, run in progress")
    text = report.write(None)
    print(text)
    return 0


@dataclass
class Report:
    """The Markdown report, rewritten after every case."""

    command: str
    args: argparse.Namespace
    missing: list[str]
    load_before: tuple[float, float, float]
    started: float
    rows: list[list[str]] = field(default_factory=list)
    checks: list[list[str]] = field(default_factory=list)

    def write(self, progress: str | None) -> str:
        """Write the report to ``args.out`` and return it; ``progress`` marks a partial one."""
        args = self.args
        minutes = (time.time() - self.started) / 60
        now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        lines = [
            "# Speed and memory of explaining a batch",
            "",
            *([f"**Partial: {progress}.**", ""] if progress else []),
            f"Command: `{self.command}` ({minutes:.0f} min, finished {now})",
            "",
            f"Machine: {machine(args.device)}; device `{args.device}`.",
            "",
            "Load average (1, 5, 15 min) at the start: "
            + ", ".join(f"{v:.2f}" for v in self.load_before)
            + f"; at the end: {load}.",
            "",
            f"Versions: {versions()}.",
            "",
            f"Median of {args.repeats} rounds after {args.warmup} warm-up round(s); the methods of"
            " a case run interleaved, round-robin. Inputs 224x224, torchvision models with seeded"
            " random weights.",
            "",
            *markdown_table(
                [
                    "model",
                    "batch",
                    "layer",
                    "targets",
                    "method",
                    "wall s",
                    "x inference",
                    "CPU s",
                    "CPU x inference",
                    "images/s",
                    "extra peak MiB",
                    "x inference memory",
                ],
                self.rows,
            ),
            "",
            "## Targets",
            "",
            "Time ratios: process CPU time (wall time in brackets); on a CPU the CPU-time ratio"
            " decides, since other jobs on a shared machine lengthen wall times unevenly.",
            "",
            *markdown_table(["model", "batch", "check", "value", "target", "met"], self.checks),
            "",
            "## Notes",
            "",
            *NOTES,
        ]
        if self.missing:
            lines.append(
                f"- Not installed, so not measured: {', '.join(self.missing)}"
                " (`pip install .[bench]`)."
            )
        if args.device.startswith("cuda"):
            lines.append(
                "- CUDA: extra peak memory is `torch.cuda.max_memory_allocated()` minus the"
                " memory allocated before the call."
            )
        if not args.no_keras and progress is None:
            lines += keras_section(args)
        text = "\n".join(lines) + "\n"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        return text


NOTES = [
    "- Every method explains the same layer (the one our probe picks: the last module whose output"
    " still has spatial extent) and, for one target, the predicted class of each image, passed as"
    " indices. Every call builds its explainer and removes its hooks, as a user's call would.",
    "- Ours returns maps upsampled to 224x224 (bicubic); pytorch-grad-cam returns NumPy maps,"
    " min-max normalised and resized with OpenCV; torch-cam returns maps at the layer's"
    " resolution.",
    "- Top-5: ours is one forward pass and one vectorised backward pass for the five targets"
    " through the layers after the explained one (`TopK(5)`; five gradient calls for a single"
    " sample on a CPU, where that is faster). pytorch-grad-cam explains one class per image and"
    " call: five forward and full backward passes. torch-cam: one forward pass with its graph"
    " kept and five gradient calls (`retain_graph=True`), its cheapest way.",
    "- The drop-in (`gradcampp.pytorch_grad_cam.GradCAMPlusPlus`) is called exactly as"
    " pytorch-grad-cam's `GradCAMPlusPlus` (same targets, a `with` block per call) and returns"
    " the same maps (its default variant reproduces pytorch-grad-cam's numbers); `aug_smooth`:"
    " both explain six augmented copies (flipped or not, brightness x 0.9, 1, 1.1).",
    "- Extra peak memory: each method runs alone in a fresh process; `VmHWM` (peak resident set)"
    " is reset through `/proc/self/clear_refs` after the model and inputs are loaded, and read"
    " after the call. 'x inference memory' divides by the extra peak of the inference pass.",
    "- `OMP_WAIT_POLICY=PASSIVE` (unless set otherwise): idle OpenMP threads sleep instead of"
    " spinning, so process CPU time counts work, not waiting for a core another process holds.",
    "- The CPU is shared with other jobs; the load average above shows how busy it was."
    " Interleaving the methods spreads load changes over all of them, but the ratios of a loaded"
    " run are noisier.",
    "- The `--device cuda` path (images/s, `torch.cuda.max_memory_allocated`) has not been run yet:"
    " no GPU was available when these figures were taken.",
]


if __name__ == "__main__":
    sys.exit(main())
