"""Explanation quality on the demo shapes, whose object masks and boxes are known exactly.

For single-instance and multi-instance (2 to 4 shapes) images separately, it explains the true
class of each image with Grad-CAM++ (paper and xplique variants) and Grad-CAM, and compares them
with two maps that know nothing of the model: uniform random noise and a centred Gaussian.
Columns: Average Drop %, % Increase in Confidence, Win % vs Grad-CAM (paper section 4.1),
Deletion and Insertion AUC (Petsiuk et al. 2018), pointing game, energy pointing game,
Loc(delta) at delta = 0, 0.25, 0.5 (paper section 4.3) and instance recall, all over the boxes.

Run from the repository root:

    PYTHONPATH=src python -m benchmarks.quality [--n 500] [--seed 0]

It prints Markdown tables and writes them, with the seed and the command, to
``benchmarks/results/quality.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradcampp import GradCAM, GradCAMPP
from gradcampp.demo import generate_shapes, load_demo_model
from gradcampp.metrics import (
    average_drop,
    boxes_to_masks,
    cascading_randomization,
    deletion,
    energy_pointing_game,
    explanation_confidence,
    increase_in_confidence,
    insertion,
    instance_recall,
    loc_delta,
    minmax_normalize,
    pointing_game,
    win_percentage,
)

DELTAS = (0.0, 0.25, 0.5)
# Zhang et al.'s 15 px pointing tolerance at 224 px, scaled to the 64 px demo images
TOLERANCE = 4.0
MIN_SHARE = 0.1
GAUSSIAN_SIGMA = 0.25  # of the image side
COLUMNS = (
    "Avg Drop % ↓",
    "Incr. Conf. % ↑",
    "Win % vs Grad-CAM ↑",
    "Deletion AUC ↓",
    "Insertion AUC ↑",
    "Pointing ↑",
    "Energy PG ↑",
    "Loc(0) ↑",
    "Loc(0.25) ↑",
    "Loc(0.5) ↑",
    "Inst. recall ↑",
)
EXTRA_COLUMNS = (
    "Loc(0), values ↑",
    "Loc(0.25), values ↑",
    "Loc(0.5), values ↑",
    "support: share of pixels with E > 0",
)
SETTINGS = (("single-instance", 1), ("multi-instance (2-4)", (2, 4)))


def gaussian_map(n: int, size: int, sigma: float) -> np.ndarray:
    """``(n, size, size)`` copies of ``exp(-d^2 / (2 sigma^2))``, ``d`` the distance to the
    image centre."""
    centre = (size - 1) / 2
    coords = np.arange(size) - centre
    one = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma**2))
    return np.broadcast_to(one, (n, size, size)).copy()


def method_maps(
    model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, seed: int, batch_size: int
) -> dict[str, np.ndarray]:
    """Maps ``(N, H, W)`` of every compared method for the true classes ``labels``."""
    n, size = images.shape[0], images.shape[-1]
    explainers: dict[str, Callable[[], Any]] = {
        "Grad-CAM++ (paper)": lambda: GradCAMPP(model, batch_size=batch_size),
        "Grad-CAM++ (xplique)": lambda: GradCAMPP(model, batch_size=batch_size, variant="xplique"),
        "Grad-CAM": lambda: GradCAM(model, batch_size=batch_size),
    }
    maps = {name: make().explain(images, labels) for name, make in explainers.items()}
    maps["random map"] = np.random.default_rng(seed).uniform(size=(n, size, size))
    maps["centred Gaussian"] = gaussian_map(n, size, GAUSSIAN_SIGMA * size)
    return maps


def evaluate(
    model: torch.nn.Module,
    n: int,
    seed: int,
    instances: int | tuple[int, int],
    *,
    steps: int = 16,
    batch_size: int = 250,
) -> tuple[dict[str, list[float]], dict[str, list[float]], float]:
    """Scores (one list per method, in ``COLUMNS`` order), their standard errors, and the
    model's accuracy on the images."""
    batch = generate_shapes(n, seed, instances=instances)
    images, labels = batch.images, batch.labels
    instance_boxes = boxes_to_masks(batch.boxes, images.shape[2:])
    maps = method_maps(model, images, labels, seed, batch_size)
    confidence = {
        name: explanation_confidence(model, images, m, labels, batch_size=batch_size)
        for name, m in maps.items()
    }
    accuracy = float(np.mean(_predict(model, images, batch_size) == labels))
    reference = confidence["Grad-CAM"].o
    scores, errors = {}, {}
    for name, m in maps.items():
        y, o = confidence[name].y, confidence[name].o
        drops = 100 * np.maximum(0, y - o) / y
        per_image = [
            drops,
            100.0 * (o > y),
            None if name == "Grad-CAM" else 100.0 * ((o > reference) + 0.5 * (o == reference)),
            deletion(model, images, m, labels, steps=steps, batch_size=batch_size).auc,
            insertion(model, images, m, labels, steps=steps, batch_size=batch_size).auc,
            pointing_game(m, instance_boxes, tolerance=TOLERANCE).astype(float),
            energy_pointing_game(m, instance_boxes),
            *(loc_delta(m, instance_boxes, delta) for delta in DELTAS),
            instance_recall(m, instance_boxes, min_share=MIN_SHARE),
        ]
        assert abs(per_image[0].mean() - average_drop(y, o)) < 1e-9
        assert abs(per_image[1].mean() - increase_in_confidence(y, o)) < 1e-9
        if name != "Grad-CAM":
            assert abs(per_image[2].mean() - win_percentage(o, reference)) < 1e-9
        per_image += [
            *(loc_delta(m, instance_boxes, delta, binarize=False) for delta in DELTAS),
            np.mean(minmax_normalize(m) > 0, axis=(1, 2)),
        ]
        scores[name] = [np.nan if v is None else float(v.mean()) for v in per_image]
        errors[name] = [
            np.nan if v is None else float(v.std(ddof=1) / np.sqrt(n)) for v in per_image
        ]
    return scores, errors, accuracy


def sanity_table(model: torch.nn.Module, n: int, seed: int, batch_size: int) -> str:
    """Mean Spearman correlation with the trained model's maps after each cascading step."""
    batch = generate_shapes(n, seed, instances=(1, 4))
    makers = {
        "Grad-CAM++ (paper)": lambda m: GradCAMPP(m, batch_size=batch_size),
        "Grad-CAM++ (xplique)": lambda m: GradCAMPP(m, batch_size=batch_size, variant="xplique"),
        "Grad-CAM": lambda m: GradCAM(m, batch_size=batch_size),
    }
    results = {
        name: cascading_randomization(make, model, batch.images, batch.labels, seed=seed)
        for name, make in makers.items()
    }
    layers = next(iter(results.values())).layers
    lines = [
        "| method | " + " | ".join(f"up to `{layer}`" for layer in layers) + " |",
        "|---|" + "---:|" * len(layers),
    ]
    for name, result in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in result.mean) + " |")
    return "\n".join(lines)


def _predict(model: torch.nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [
                model(torch.from_numpy(images[i : i + batch_size])).argmax(1).numpy()
                for i in range(0, len(images), batch_size)
            ]
        )


def _cell(value: float, column: int, decimals_from: int = 3) -> str:
    if np.isnan(value):
        return "—"
    return f"{value:.1f}" if column < decimals_from else f"{value:.3f}"


def table(
    scores: dict[str, list[float]],
    errors: dict[str, list[float]],
    columns: tuple[str, ...] = COLUMNS,
    decimals_from: int = 3,
) -> str:
    """A Markdown table: a row per method, then each column's largest standard error."""
    lines = [
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, row in scores.items():
        lines.append(
            f"| {name} | "
            + " | ".join(_cell(v, i, decimals_from) for i, v in enumerate(row))
            + " |"
        )
    worst = np.nanmax(np.array(list(errors.values())), axis=0)
    lines.append(
        "| ± s.e. (largest) | "
        + " | ".join(_cell(v, i, decimals_from) for i, v in enumerate(worst))
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="images per setting (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="data and random-map seed")
    parser.add_argument("--steps", type=int, default=16, help="Deletion/Insertion steps")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument(
        "--sanity-n", type=int, default=100, help="images for the randomisation check"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/quality.md"), help="Markdown output"
    )
    args = parser.parse_args(argv)
    command = "PYTHONPATH=src python -m benchmarks.quality " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    model = load_demo_model()
    started = time.perf_counter()
    parts = [
        "# Explanation quality on the demo shapes",
        "",
        f"Command: `{command}`  ",
        f"Seed: {args.seed}; {args.n} images per setting; true classes explained; "
        f"Deletion/Insertion in {args.steps} steps (deleted pixels set to 0, insertion from a "
        f"Gaussian blur with sigma 5 px); pointing tolerance {TOLERANCE:g} px; Loc, energy and "
        f"pointing over the union of the boxes; instance recall: share of instances (boxes) "
        f"holding >= {MIN_SHARE:g} of the map's energy; Gaussian map sigma = "
        f"{GAUSSIAN_SIGMA:g} x image side; Win % counts ties as half.",
    ]
    for title, instances in SETTINGS:
        scores, errors, accuracy = evaluate(
            model, args.n, args.seed, instances, steps=args.steps, batch_size=args.batch_size
        )
        main_cols = len(COLUMNS)
        parts += [
            "",
            f"## {title} images (model accuracy {100 * accuracy:.1f}%)",
            "",
            table(
                {k: v[:main_cols] for k, v in scores.items()},
                {k: v[:main_cols] for k, v in errors.items()},
            ),
            "",
            "Loc(delta) with the map's values kept above delta (`binarize=False`) instead of "
            "binarised, and the share of pixels where the normalised map is above 0:",
            "",
            table(
                {k: v[main_cols:] for k, v in scores.items()},
                {k: v[main_cols:] for k, v in errors.items()},
                EXTRA_COLUMNS,
                0,
            ),
        ]
        print(f"{title}: done after {time.perf_counter() - started:.0f} s", file=sys.stderr)
    parts += [
        "",
        f"## Sanity check: cascading randomisation ({args.sanity_n} images, 1-4 instances)",
        "",
        "Mean Spearman rank correlation between each image's map from the trained model and "
        "from a copy whose layers are re-initialised from the output down to the named layer "
        "(Adebayo et al. 2018); low values pass.",
        "",
        sanity_table(model, args.sanity_n, args.seed, args.batch_size),
    ]
    parts += ["", f"Run time: {time.perf_counter() - started:.0f} s, torch {torch.__version__}."]
    text = "\n".join(parts) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
