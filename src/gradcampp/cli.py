"""The ``gradcampp`` command: ``gradcampp demo`` and ``gradcampp explain``.

Run ``gradcampp --help`` or ``python -m gradcampp --help`` for the options and exit codes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from gradcampp._ray import LAYOUTS
from gradcampp.out_folder import OutputDirError, claim_folder, prepare_out_dir

EXIT_OK = 0
EXIT_SKIPPED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_NOTHING = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130
MAX_DEMO_COUNT = 1000  # demo --count: the images are generated in memory at once
MAX_SIZE = 4096  # --size: the largest side; memory grows with --batch-size x height x width

EXIT_CODES = f"""exit status:
  {EXIT_OK}  every image was explained and written
  {EXIT_SKIPPED}  some inputs were skipped (unreadable, corrupt, too large, or the model failed
     on them): each was reported, the others were written
  {EXIT_USAGE}  bad command line (unknown option or value, no image found); --out is
     not a writable directory or breaks the output-folder rules (a link, or a
     folder not made by gradcampp, named explanations.parquet; a manifest that
     is a pipe); --resume finds a run file that does not parse or records other
     settings
  {EXIT_MODEL}  the model could not be used: missing model/weights file or one that is
     not a regular file, unknown model spec or device, a module:callable that
     fails, bad --layer name, no layer to explain, a model that fails on every
     input of the size given (--size), --target out of range, unsupported model
     or model output (e.g. infinite class scores)
  {EXIT_NOTHING}  no input could be read or explained (each was reported)
  {EXIT_INTERNAL}  an unexpected error: a bug in gradcampp (GRADCAMPP_TRACEBACK=1 shows where)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""

DEMO_EXIT_CODES = f"""exit status:
  {EXIT_OK}  the demo was explained and written
  {EXIT_USAGE}  bad command line, --out is not a writable directory, or its folder
     inputs was not made by gradcampp (the demo's images go there)
  {EXIT_MODEL}  the demo network could not be loaded: a missing extra (the message names it;
     pip install ".[demo]" in a gradcampp checkout)
  {EXIT_INTERNAL}  an unexpected error: a bug in gradcampp (GRADCAMPP_TRACEBACK=1 shows where)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""

MODEL_HELP = """model to explain:
  torchvision:NAME         a torchvision architecture (e.g. torchvision:resnet50); weights from
                           --weights FILE (a state dict), --weights DEFAULT (torchvision's
                           download, needs a network) or random when --weights is left out;
                           preprocessing and ImageNet-1k class names from torchvision
  package.module:callable  a function (no arguments) returning a torch.nn.Module or a Keras
                           model; --weights FILE loads a state dict into it
  FILE.keras               a saved Keras model (it holds its weights: no --weights)
  FILE.pt                  a whole module saved with torch.save(model): only with --allow-pickle
                           (TorchScript files are refused: they do not support the forward hooks
                           that Grad-CAM needs)
  demo                     the bundled demo network (64x64 shape images); no --weights
  demo-fc                  the second demo network: flatten + hidden fully connected head
  A torchvision model without --weights explains random weights (a warning says so).
  The model must return one tensor of class scores (N, K), not a tuple."""


PREPROCESS_HELP = f"""preprocessing:
  torchvision:NAME         as torchvision's transforms for the architecture (e.g. resize the
                           shorter side to 256, centre-crop 224, ImageNet mean and std)
  .keras file              resize to the model's input size, values in [0, 1]
  other models             resize to 224x224, ImageNet mean and std
  --size, --mean, --std    override these (--size resizes straight to the size, no crop;
                           at most {MAX_SIZE} pixels a side)
  images                   8-bit, 16-bit and float images; 16-bit values are divided by
                           65535, float values kept in [0, 1] (others scaled from their own
                           range, with a warning); at most 100 megapixels, aspect ratio 50:1
  Each image is reduced to the model's view as it is read: memory grows with --batch-size,
  not with the size of the files."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2), naming the
    help to read instead of printing the whole usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"gradcampp: error: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _positive(text: str) -> int:
    try:
        value = int(text) if text.strip().isascii() else -1
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _demo_count(text: str) -> int:
    value = _positive(text)
    if value > MAX_DEMO_COUNT:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_DEMO_COUNT} (the images are generated in memory), got {text}"
        )
    return value


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        if not text.isascii():
            raise ValueError(text)
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = (values[0], values[0])
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive sizes, got {text!r}")
    if max(values) > MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_SIZE} pixels a side (memory grows with the square of the size), "
            f"got {text!r}"
        )
    return values


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, got {text!r}")
    return values


def _std(text: str) -> tuple[float, float, float]:
    from gradcampp.images import Preprocess

    values = _triple(text)
    try:
        Preprocess(size=(1, 1), std=values)  # the rule on std lives there
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return values


def _out(text: str) -> str:
    from gradcampp.out_folder import OutputDirError, check_out_text

    try:
        return check_out_text(text)
    except OutputDirError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--out ")) from None


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def _add_output_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument(
        "--out",
        type=_out,
        default=default_out,
        metavar="DIR",
        help=f"output directory (default: {default_out}); a file there that gradcampp did not "
        "write is never replaced",
    )
    parser.add_argument(
        "--cmap", default="inferno", help="matplotlib colour map of the overlays (default: inferno)"
    )
    parser.add_argument(
        "--alpha", type=_alpha, default=0.5, help="heatmap weight in the overlays (default: 0.5)"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar, no summary (warnings and errors are still shown)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gradcampp`` command."""
    parser = OneLineParser(
        prog="gradcampp",
        description="Grad-CAM++ and Grad-CAM explanations of image classifiers: overlays, raw\n"
        "maps, predictions and a browsable HTML report. Start with: gradcampp demo",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from gradcampp import __version__

    parser.add_argument("--version", action="version", version=f"gradcampp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="explain generated shape images with the bundled demo network",
        description="Generate single- and multi-instance shape images, explain them with "
        "Grad-CAM++ and Grad-CAM side by side using the bundled demo network, and write the "
        "pictures and an HTML report. Needs no network and no model of your own.",
        epilog=DEMO_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_output_options(demo, "gradcampp-demo")
    demo.add_argument("--seed", type=int, default=0, help="image generator seed (default: 0)")
    demo.add_argument(
        "--count",
        type=_demo_count,
        default=6,
        help=f"single-instance images; half as many multi-instance ones follow (default: 6, "
        f"at most {MAX_DEMO_COUNT})",
    )
    demo.add_argument(
        "--head",
        choices=("gap", "fc"),
        default="gap",
        help="demo network: gap (global average pooling, the default) or fc (flatten + hidden "
        "fully connected layer, where Grad-CAM++ and Grad-CAM differ more)",
    )

    explain = commands.add_parser(
        "explain",
        help="explain your own model on image files",
        description=textwrap.fill(
            "Explain a model's decisions on image files. For each input NAME.ext the "
            "output directory gets NAME.input.jpg (the image as the model saw it), "
            "NAME.<method>.jpg (overlay; .png files with --pictures png), NAME.<method>.npy "
            "(raw map, (H, W), or "
            "(K, H, W) with --top-k K; see --map-dtype), NAME.json (top classes and scores); "
            "and for the run "
            "predictions.csv and index.html. NAME is unique within the run and never the name "
            "of an input, so --out may be the inputs' folder; paths in the results are relative "
            "to --out.",
            width=78,
        )
        + "\n\n"
        + MODEL_HELP
        + "\n\n"
        + PREPROCESS_HELP,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain.add_argument(
        "inputs", nargs="+", metavar="IMAGES_OR_DIRS", help="image files and/or directories"
    )
    explain.add_argument("--model", required=True, metavar="SPEC", help="the model (see above)")
    explain.add_argument(
        "--weights", metavar="FILE", help="state-dict file, or DEFAULT for torchvision's weights"
    )
    explain.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow --model FILE to be a pickled whole module; WARNING: loading a pickle runs "
        "code stored in the file: use it only for files you trust",
    )
    explain.add_argument(
        "--layer",
        metavar="NAME",
        help="explained layer (default: the last one with spatial extent)",
    )
    explain.add_argument(
        "--method",
        choices=["gradcampp", "gradcam", "both"],
        default="gradcampp",
        help="explanation method (default: gradcampp; both: side by side)",
    )
    which = explain.add_mutually_exclusive_group()
    which.add_argument(
        "--target", metavar="CLASS", help="explain this class (index or name) for every image"
    )
    which.add_argument(
        "--top-k", type=_positive, metavar="K", help="explain each image's K most probable classes"
    )
    explain.add_argument(
        "--classes", metavar="FILE", help="class names: a text file (one per line) or JSON list"
    )
    explain.add_argument(
        "--size", type=_size, metavar="N|HxW", help="resize inputs to this size (no crop)"
    )
    explain.add_argument(
        "--mean", type=_triple, metavar="R,G,B", help="normalisation mean (values in [0, 1])"
    )
    explain.add_argument("--std", type=_std, metavar="R,G,B", help="normalisation std")
    explain.add_argument(
        "--batch-size", type=_positive, default=16, metavar="N", help="images per batch (16)"
    )
    explain.add_argument(
        "--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, auto (default: cpu)"
    )
    _add_output_options(explain, "gradcampp-out")
    _add_engine_options(explain)
    return parser


def _gpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


ENGINE_HELP = """engines:
  local                    this process (default)
  ray                      a Ray cluster (pip install ".[ray]" in a gradcampp checkout): one
                           model per worker, images streamed through Ray Data; without
                           --address a local Ray is started for the run with --workers CPUs
                           (RAY_ADDRESS, when set, is joined instead). The request is checked
                           against the cluster before anything starts. The same files as local."""


def _add_engine_options(explain: argparse.ArgumentParser) -> None:
    """The options of where a run executes and of what it writes for large data sets."""
    group = explain.add_argument_group("engine and large runs", ENGINE_HELP)
    group.add_argument("--engine", choices=["local", "ray"], default="local", help="(local)")
    group.add_argument(
        "--address", metavar="ADDR", help="Ray cluster to join (auto, HOST:PORT, ray://...)"
    )
    group.add_argument(
        "--workers", type=_positive, metavar="N", help="Ray workers, each with one model"
    )
    group.add_argument(
        "--gpus-per-worker", type=_gpus, default=0.0, metavar="G", help="GPUs per Ray worker (0)"
    )
    group.add_argument(
        "--ray-stages",
        choices=LAYOUTS,
        metavar="{" + ",".join(LAYOUTS) + "}",
        help="split: read and write as CPU tasks, explain in the model workers; fused: each "
        "worker reads, explains and writes its images in its own process; auto (default): "
        "split when --gpus-per-worker > 0, fused otherwise (on CPUs alone, splitting only adds "
        "transfers between processes)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="explain only the images a previous run into --out did not finish (a record "
        "that does not match what gradcampp writes is explained again, with a warning)",
    )
    group.add_argument(
        "--no-overlays",
        action="store_true",
        help="write no pictures and no report: maps and predictions only",
    )
    group.add_argument(
        "--pictures",
        choices=["jpeg", "png"],
        default="jpeg",
        help="format of NAME.input.* and the overlays: jpeg (default): quality 95 without chroma "
        "subsampling, about a third of PNG's bytes, within about 1.5 levels of 255 on average; "
        "png: lossless",
    )
    group.add_argument(
        "--format",
        choices=["files", "parquet"],
        default="files",
        help="files: a .npy and a .json per image (default); parquet: one Parquet dataset "
        "explanations.parquet of maps and predictions",
    )
    group.add_argument(
        "--map-dtype",
        choices=["float16", "float32"],
        default="float16",
        help="how .npy and Parquet maps are stored: float16 (default): float16 values with a "
        "float32 scale per map, half the bytes, within 2.5e-4 of each map's maximum (read them "
        "with gradcampp.maps.load_map); float32: the plain float32 maps",
    )
    group.add_argument(
        "--full-size",
        action="store_true",
        help="Parquet maps at the input's size (default: the explained layer's)",
    )
    group.add_argument(
        "--report-sample",
        type=_positive,
        metavar="K",
        help="show K images in the report, spread over the inputs (default: all)",
    )


def _engine_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with the engine options, or None."""
    if args.engine == "local":
        given = [
            flag
            for flag, value in (
                ("--address", args.address),
                ("--workers", args.workers),
                ("--gpus-per-worker", args.gpus_per_worker or None),
                ("--ray-stages", args.ray_stages),
            )
            if value is not None
        ]
        if given:
            return f"{', '.join(given)} need --engine ray"
    if args.full_size and args.format != "parquet":
        return "--full-size applies to --format parquet (the .npy maps are always full size)"
    return None


def _error(message: str, code: int) -> int:
    print(f"gradcampp: error: {_one_line(message)}", file=sys.stderr)
    return code


def _warn(message: str) -> None:
    print(f"gradcampp: warning: {_one_line(message)}", file=sys.stderr)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _check_cmap(cmap: str) -> None:
    from gradcampp.viz import colorize

    colorize(0.0, cmap)  # ValueError naming the colour maps


def _report(result: object, quiet: bool) -> int:
    from gradcampp.engines import RunResult
    from gradcampp.outputs import display_path

    assert isinstance(result, RunResult)
    for note in result.notes:
        _warn(note)
    for name, reason in result.skipped:
        print(f"gradcampp: skipped {_one_line(name)}: {_one_line(reason)}", file=sys.stderr)
    if not result.records:
        return _error(
            "no input could be read or explained (each was reported above); nothing was explained",
            EXIT_NOTHING,
        )
    if not quiet:
        skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
        earlier = f" ({result.resumed} by an earlier run)" if result.resumed else ""
        print(
            f"Explained {len(result.records)} image(s){earlier}{skipped}; results in "
            f"{display_path(result.out_dir)}"
        )
        if result.report is not None:
            print(f"Report: {display_path(result.report.resolve())}")
    return EXIT_SKIPPED if result.skipped else EXIT_OK


def _near_classes(text: str, classes: Sequence[str], n: int = 5) -> str:
    """The class names nearest to ``text`` with their indices, as ``--layer`` suggests layers:
    names that contain it (as a word part) first, then spelling neighbours."""
    import difflib

    lowered = [name.lower() for name in classes]
    key = text.lower()
    found = [i for i, name in enumerate(lowered) if key and key in name]
    close = difflib.get_close_matches(key, lowered, n=n, cutoff=0.6)
    for name in close:
        index = lowered.index(name)
        if index not in found:
            found.append(index)
    if not found:
        return f"no name is close to it (the model has {len(classes)} classes)"
    shown = ", ".join(f"{classes[i]!r} ({i})" for i in found[:n])
    more = f" and {len(found) - n} more" if len(found) > n else ""
    return f"nearest names (index): {shown}{more}"


def _resolve_target(text: str | None, classes: Sequence[str] | None) -> int | None:
    from gradcampp.model_specs import ModelSpecError

    if text is None:
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    if classes is not None:
        matches = [i for i, name in enumerate(classes) if name.lower() == text.lower()]
        if matches:
            return matches[0]
        raise ModelSpecError(
            f"--target {text!r} is neither a class index (0, 1, 2, ...) nor one of the class "
            f"names; {_near_classes(text, classes)}"
        )
    raise ModelSpecError(
        f"--target {text!r} is not a class index (0, 1, 2, ...), and class names are unknown "
        "for this model (--classes FILE gives them)"
    )


def run_explain(args: argparse.Namespace) -> int:
    """``gradcampp explain``: load the model, explain the inputs, write the results."""
    from gradcampp.engines import run_job
    from gradcampp.images import find_images
    from gradcampp.model_specs import ModelSpecError, read_class_names
    from gradcampp.out_folder import read_manifest
    from gradcampp.outputs import display_path
    from gradcampp.recipe import ModelRecipe
    from gradcampp.stages.settings import METHODS, Settings

    problem = _engine_usage(args)
    if problem is not None:
        return _error(problem, EXIT_USAGE)
    out_dir = Path(args.out)
    try:
        paths = find_images(args.inputs, exclude=out_dir, skip=read_manifest(out_dir))
    except OutputDirError as error:
        return _error(str(error), EXIT_USAGE)
    if not paths:
        return _error(
            "no image found in " + " ".join(display_path(p) for p in args.inputs), EXIT_USAGE
        )
    try:
        _check_cmap(args.cmap)
        prepare_out_dir(out_dir)
        recipe = ModelRecipe(
            args.model,
            weights=args.weights,
            allow_pickle=args.allow_pickle,
            device=args.device,
            classes=read_class_names(args.classes) if args.classes else None,
            size=args.size,
            mean=args.mean,
            std=args.std,
        )
        # the Ray engine loads the model here only to check the job: on the CPU
        loaded = recipe.load(device="cpu" if args.engine == "ray" else None)
        for warning in loaded.warnings:
            _warn(warning)
        target = _resolve_target(args.target, loaded.classes)
        methods = ("gradcampp", "gradcam") if args.method == "both" else (args.method,)
        settings = Settings(
            methods=methods,
            target=target,
            top_k=args.top_k,
            layer=args.layer,
            batch_size=args.batch_size,
            cmap=args.cmap,
            alpha=args.alpha,
            overlays=not args.no_overlays,
            pictures=args.pictures,
            format=args.format,
            full_size=args.full_size,
            map_dtype=args.map_dtype,
        )
        ray_options = {}
        if args.engine == "ray":
            ray_options = {
                "address": args.address,
                "workers": args.workers,
                "gpus_per_worker": args.gpus_per_worker,
                "stages": args.ray_stages or "auto",
            }
        result = run_job(
            recipe,
            paths,
            out_dir,
            settings,
            engine=args.engine,
            loaded=loaded,
            resume=args.resume,
            report_sample=args.report_sample,
            progress=not args.quiet,
            title=" and ".join(METHODS[m][1] for m in methods) + " explanations",
            **ray_options,
        )
    except ModelSpecError as error:
        return _error(str(error), EXIT_MODEL)
    except (OutputDirError, ConnectionError) as error:  # ConnectionError: --address
        return _error(str(error), EXIT_USAGE)
    except OSError as error:
        return _error(
            f"cannot write the results into {display_path(out_dir)}: {error.strerror or error}",
            EXIT_USAGE,
        )
    except (ValueError, ImportError) as error:  # a bad --std, Ray not installed, ...
        return _error(str(error), EXIT_USAGE)
    return _report(result, args.quiet)


DEMO_MODULES = {"torch": "torch", "PIL": "pillow", "matplotlib": "matplotlib", "jinja2": "jinja2"}


def _missing_modules(modules: dict[str, str]) -> list[str]:
    """The packages (install names) of ``modules`` (import name -> package) that do not import."""
    import importlib

    missing = []
    for module, package in modules.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def run_demo(args: argparse.Namespace) -> int:
    """``gradcampp demo``: generated shape images, the bundled network, both methods."""
    from gradcampp.model_specs import ModelSpecError, load_model

    missing = _missing_modules(DEMO_MODULES)
    if missing:
        return _error(
            f"the demo needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            'not installed: pip install ".[demo]" in a gradcampp checkout (the "demo" extra)',
            EXIT_MODEL,
        )
    from gradcampp.demo_run import write_demo_inputs

    out_dir = Path(args.out)
    try:
        _check_cmap(args.cmap)
        prepare_out_dir(out_dir)
        spec = "demo-fc" if args.head == "fc" else "demo"
        loaded = load_model(spec)
        from gradcampp.engines import run_job
        from gradcampp.recipe import ModelRecipe
        from gradcampp.stages.settings import Settings

        inputs = claim_folder(out_dir, "inputs", "the demo's images")
        demo_images = write_demo_inputs(inputs, count=args.count, seed=args.seed)
        truth = {image.path: image for image in demo_images}
        result = run_job(
            ModelRecipe(spec),
            [image.path for image in demo_images],
            out_dir,
            Settings(methods=("gradcampp", "gradcam"), cmap=args.cmap, alpha=args.alpha),
            loaded=loaded,
            progress=not args.quiet,
            notes=lambda path: truth[path].note,
            title="gradcampp demo: Grad-CAM++ and Grad-CAM on generated shapes",
        )
    except ModelSpecError as error:
        return _error(str(error), EXIT_MODEL)
    except OutputDirError as error:
        return _error(str(error), EXIT_USAGE)
    except OSError as error:
        return _error(
            f"cannot write the demo into {out_dir}: {error.strerror or error}", EXIT_USAGE
        )
    except ValueError as error:
        return _error(str(error), EXIT_USAGE)
    code = _report(result, quiet=True)
    if not result.records:
        return code
    truth_by_input = {image.path.resolve(): image for image in demo_images}
    correct = sum(
        record["top_classes"][0]["class_index"]
        == truth_by_input[(out_dir / record["input"]).resolve()].label
        for record in result.records
    )
    if not args.quiet:
        print(f"The demo network classified {correct} of {len(result.records)} images correctly.")
    print(f"Report: {result.report.resolve() if result.report else out_dir}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Every failure ends in one line on stderr and a documented exit status, never a traceback
    (set ``GRADCAMPP_TRACEBACK=1`` to see one for an unexpected error).
    """
    # TensorFlow, if a Keras model brings it in, reads this when it is first imported: without it,
    # it logs lines about CUDA and CPU instructions that are noise for a command-line user. A
    # value the user set is kept (e.g. TF_CPP_MIN_LOG_LEVEL=0 to see everything).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return int(exit_.code or 0)
    try:
        if args.command == "demo":
            return run_demo(args)
        return run_explain(args)
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_INTERRUPTED)
    except Exception as error:
        if os.environ.get("GRADCAMPP_TRACEBACK"):
            raise
        return _error(
            f"unexpected {type(error).__name__}: {error} (this is a bug in gradcampp; "
            "GRADCAMPP_TRACEBACK=1 shows where it happened)",
            EXIT_INTERNAL,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
