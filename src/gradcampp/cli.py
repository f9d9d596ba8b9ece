"""The ``gradcampp`` command: ``gradcampp demo`` and ``gradcampp explain``.

Run ``gradcampp --help`` or ``python -m gradcampp --help`` for the options and exit codes.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_SKIPPED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_NOTHING = 4

EXIT_CODES = f"""exit status:
  {EXIT_OK}  every image was explained and written
  {EXIT_SKIPPED}  some inputs were unreadable or corrupt: they were reported and skipped, the
     others were written
  {EXIT_USAGE}  bad command line (unknown option or value, no image found)
  {EXIT_MODEL}  the model could not be used: missing or unreadable model/weights file, unknown
     model spec, bad --layer name, --target out of range, unsupported model
  {EXIT_NOTHING}  no input could be read, nothing was explained
"""

MODEL_HELP = """model to explain:
  torchvision:NAME         a torchvision architecture (e.g. torchvision:resnet50); weights from
                           --weights FILE (a state dict), --weights DEFAULT (torchvision's
                           download, needs a network) or random when --weights is left out;
                           preprocessing and ImageNet-1k class names from torchvision
  package.module:callable  a function (no arguments) returning a torch.nn.Module or a Keras
                           model; --weights FILE loads a state dict into it
  FILE.keras               a saved Keras model
  FILE.pt                  a whole module saved with torch.save(model): only with --allow-pickle
                           (TorchScript files are refused: they do not support the forward hooks
                           that Grad-CAM needs)
  demo                     the bundled demo network (64x64 shape images)
  demo-fc                  the second demo network: flatten + hidden fully connected head"""


PREPROCESS_HELP = """preprocessing:
  torchvision:NAME         as torchvision's transforms for the architecture (e.g. resize the
                           shorter side to 256, centre-crop 224, ImageNet mean and std)
  .keras file              resize to the model's input size, values in [0, 1]
  other models             resize to 224x224, ImageNet mean and std
  --size, --mean, --std    override these (--size resizes straight to the size, no crop)"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = (values[0], values[0])
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive sizes, got {text!r}")
    return values  # type: ignore[return-value]


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers R,G,B, got {text!r}")
    return values  # type: ignore[return-value]


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def _add_output_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument(
        "--out",
        default=default_out,
        metavar="DIR",
        help=f"output directory (default: {default_out})",
    )
    parser.add_argument(
        "--cmap", default="inferno", help="matplotlib colour map of the overlays (default: inferno)"
    )
    parser.add_argument(
        "--alpha", type=_alpha, default=0.5, help="heatmap weight in the overlays (default: 0.5)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gradcampp`` command."""
    parser = argparse.ArgumentParser(
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
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_output_options(demo, "gradcampp-demo")
    demo.add_argument("--seed", type=int, default=0, help="image generator seed (default: 0)")
    demo.add_argument(
        "--count",
        type=_positive,
        default=6,
        help="single-instance images; half as many multi-instance ones follow (default: 6)",
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
            "output directory gets NAME.input.png (the image as the model saw it), "
            "NAME.<method>.png (overlay), NAME.<method>.npy (raw float32 map, (H, W), or "
            "(K, H, W) with --top-k K), NAME.json (top classes and scores); and for the run "
            "predictions.csv and index.html.",
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
    explain.add_argument("--std", type=_triple, metavar="R,G,B", help="normalisation std")
    explain.add_argument(
        "--batch-size", type=_positive, default=16, metavar="N", help="images per batch (16)"
    )
    explain.add_argument(
        "--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, auto (default: cpu)"
    )
    _add_output_options(explain, "gradcampp-out")
    return parser


def _error(message: str, code: int) -> int:
    print(f"gradcampp: error: {message}", file=sys.stderr)
    return code


def _report(result: object, quiet: bool, stream: object = None) -> int:
    from gradcampp.pipeline import RunResult

    assert isinstance(result, RunResult)
    for name, reason in result.skipped:
        print(f"gradcampp: skipped {name}: {reason}", file=sys.stderr)
    if not result.records:
        return _error("no input could be read; nothing was explained", EXIT_NOTHING)
    if not quiet:
        skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
        print(f"Explained {len(result.records)} image(s){skipped}; results in {result.out_dir}")
        print(f"Report: {result.report.resolve() if result.report else None}")
    return EXIT_SKIPPED if result.skipped else EXIT_OK


def _resolve_target(text: str | None, classes: Sequence[str] | None) -> int | None:
    from gradcampp.model_specs import ModelSpecError

    if text is None:
        return None
    if text.isdigit():
        return int(text)
    if classes is not None:
        matches = [i for i, name in enumerate(classes) if name.lower() == text.lower()]
        if matches:
            return matches[0]
        raise ModelSpecError(f"--target {text!r} is not a class index or one of the class names")
    raise ModelSpecError(
        f"--target {text!r}: class names are unknown for this model; give an index"
    )


def run_explain(args: argparse.Namespace) -> int:
    """``gradcampp explain``: load the model, explain the inputs, write the results."""
    from dataclasses import replace

    from gradcampp.images import find_images
    from gradcampp.model_specs import ModelSpecError, load_model, read_class_names
    from gradcampp.pipeline import METHODS, explain_images

    out_dir = Path(args.out)
    paths = find_images(args.inputs, exclude=out_dir)
    if not paths:
        return _error("no image found in " + " ".join(args.inputs), EXIT_USAGE)
    try:
        loaded = load_model(
            args.model, weights=args.weights, allow_pickle=args.allow_pickle, device=args.device
        )
        if args.classes:
            loaded.classes = read_class_names(args.classes)
        pre = loaded.preprocess
        if args.size is not None:
            pre = replace(pre, size=args.size, resize=None)
        if args.mean is not None:
            pre = replace(pre, mean=args.mean)
        if args.std is not None:
            pre = replace(pre, std=args.std)
        loaded.preprocess = pre
        target = _resolve_target(args.target, loaded.classes)
        methods = ("gradcampp", "gradcam") if args.method == "both" else (args.method,)
        result = explain_images(
            loaded,
            paths,
            out_dir,
            methods=methods,
            target=target,
            top_k=args.top_k,
            layer=args.layer,
            batch_size=args.batch_size,
            cmap=args.cmap,
            alpha=args.alpha,
            progress=not args.quiet,
            title=" and ".join(METHODS[m][1] for m in methods) + " explanations",
        )
    except ModelSpecError as error:
        return _error(str(error), EXIT_MODEL)
    except ValueError as error:  # e.g. an unknown colour map
        return _error(str(error), EXIT_USAGE)
    return _report(result, args.quiet)


def run_demo(args: argparse.Namespace) -> int:
    """``gradcampp demo``: generated shape images, the bundled network, both methods."""
    from gradcampp.model_specs import ModelSpecError, load_model

    try:
        from gradcampp.demo_run import write_demo_inputs
    except ImportError as error:
        return _error(f"the demo needs its extra dependencies: {error}", EXIT_MODEL)
    out_dir = Path(args.out)
    try:
        loaded = load_model("demo-fc" if args.head == "fc" else "demo")
        from gradcampp.pipeline import explain_images

        demo_images = write_demo_inputs(out_dir / "inputs", count=args.count, seed=args.seed)
        truth = {image.path: image for image in demo_images}
        result = explain_images(
            loaded,
            [image.path for image in demo_images],
            out_dir,
            methods=("gradcampp", "gradcam"),
            cmap=args.cmap,
            alpha=args.alpha,
            progress=not args.quiet,
            notes=lambda path: truth[path].note,
            title="gradcampp demo: Grad-CAM++ and Grad-CAM on generated shapes",
        )
    except ModelSpecError as error:
        return _error(str(error), EXIT_MODEL)
    except ValueError as error:
        return _error(str(error), EXIT_USAGE)
    code = _report(result, quiet=True)
    correct = sum(
        record["top_classes"][0]["class_index"] == truth[Path(record["input"])].label
        for record in result.records
    )
    if not args.quiet:
        print(f"The demo network classified {correct} of {len(result.records)} images correctly.")
    print(f"Report: {result.report.resolve() if result.report else out_dir}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return int(exit_.code or 0)
    if args.command == "demo":
        return run_demo(args)
    return run_explain(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
