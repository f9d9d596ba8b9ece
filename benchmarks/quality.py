"""Explanation quality on the demo shapes, whose object masks and boxes are known exactly.

For each bundled demo model (``gap``: global average pooling head; ``fc``: flatten + hidden fully
connected head on the same features) and for single-instance and multi-instance (2 to 4 shapes)
images separately, it explains the true class of each image with Grad-CAM++ (paper and xplique
variants) and Grad-CAM, and compares them with two maps that know nothing of the model: uniform
random noise and a centred Gaussian. Columns: Average Drop %, % Increase in Confidence, Win % vs
Grad-CAM (paper section 4.1), Deletion and Insertion AUC (Petsiuk et al. 2018; tied pixels in
random order, and in row-major order in a second table), pointing game, energy pointing game,
Loc(delta) at delta = 0, 0.25, 0.5 (the paper's, values kept; binarised in the second table) and
instance recall by energy and by peak, all over the boxes. A third table gives the paired
difference Grad-CAM++ (paper) minus Grad-CAM on the same images, with its standard error.

Every setting runs on each of ``--seeds`` (independent images and random maps), and the closing
replication tables say, for each paired comparison (Grad-CAM++ against Grad-CAM, and each real map
against each blind one), which differences lie beyond twice their standard error with the same
sign on every seed: only those are claims that replicate.

Run from the repository root:

    PYTHONPATH=src python -m benchmarks.quality [--n 500] [--seeds 0,7] [--models gap,fc]

It prints Markdown tables and writes them, with the seeds and the command, to
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
    instance_peak_recall,
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
MIN_PEAK = 0.5
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
    "Deletion AUC, row-major ties ↓",
    "Insertion AUC, row-major ties ↑",
    "Loc(0), binarised ↑",
    "Loc(0.25), binarised ↑",
    "Loc(0.5), binarised ↑",
    "support: share of pixels with E > 0",
    "Inst. recall, peak ↑",
    "all instances reached, peak ↑",
    "all instances reached, energy ↑",
)
TOL = 1e-6  # the default tolerance of increase_in_confidence and win_percentage
REFERENCE, COMPARED = "Grad-CAM", "Grad-CAM++ (paper)"
SETTINGS = (("single-instance", 1), ("multi-instance (2-4)", (2, 4)))
BLIND = ("random map", "centred Gaussian")
# the paired comparisons of the replication tables: (A, B), reported as A minus B
PAIRS = (
    (COMPARED, REFERENCE),
    *((real, blind) for real in (COMPARED, REFERENCE) for blind in BLIND),
)
MODELS = {
    "gap": "DemoCNN, global average pooling and one linear layer (gradients constant over "
    "each channel)",
    "fc": "DemoCNNFC, the same features, 4x4 max-pooling, flatten and a hidden fully connected "
    "layer (gradients vary over positions)",
}


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
    n_orders: int = 8,
) -> tuple[dict[str, list[float]], dict[str, list[float]], float, dict[str, list[np.ndarray]]]:
    """Scores (one list per method, in ``COLUMNS + EXTRA_COLUMNS`` order), their standard errors,
    the model's accuracy on the images, and the per-image values behind each score."""
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
    scores, errors, values = {}, {}, {}
    causal = {"steps": steps, "batch_size": batch_size}
    n_pixels = images.shape[-1] * images.shape[-2]
    counts = (2 * np.arange(steps + 1) * n_pixels + steps) // (2 * steps)  # as in deletion()
    for name, m in maps.items():
        y, o = confidence[name].y, confidence[name].o
        drops = 100 * np.maximum(0, y - o) / y
        wins = 100.0 * ((o > reference + TOL) + 0.5 * (np.abs(o - reference) <= TOL))
        per_image = [
            drops,
            100.0 * (o > y + TOL),
            None if name == REFERENCE else wins,
            deletion(model, images, m, labels, n_orders=n_orders, **causal).auc,
            insertion(model, images, m, labels, n_orders=n_orders, **causal).auc,
            pointing_game(m, instance_boxes, tolerance=TOLERANCE).astype(float),
            energy_pointing_game(m, instance_boxes),
            *(loc_delta(m, instance_boxes, delta) for delta in DELTAS),
            instance_recall(m, instance_boxes, min_share=MIN_SHARE),
        ]
        assert abs(per_image[0].mean() - average_drop(y, o)) < 1e-9
        assert abs(per_image[1].mean() - increase_in_confidence(y, o)) < 1e-9
        if name != REFERENCE:
            assert abs(per_image[2].mean() - win_percentage(o, reference)) < 1e-9
        peak_recall = instance_peak_recall(m, instance_boxes, min_peak=MIN_PEAK)
        per_image += [
            *row_major_auc(model, images, m, labels, per_image[3:5], counts, causal),
            *(loc_delta(m, instance_boxes, delta, binarize=True) for delta in DELTAS),
            np.mean(minmax_normalize(m) > 0, axis=(1, 2)),
            peak_recall,
            (peak_recall == 1).astype(float),
            (per_image[10] == 1).astype(float),
        ]
        scores[name] = [np.nan if v is None else float(v.mean()) for v in per_image]
        errors[name] = [
            np.nan if v is None else float(v.std(ddof=1) / np.sqrt(n)) for v in per_image
        ]
        values[name] = per_image
    return scores, errors, accuracy, values


def cuts_a_tie(maps: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: whether some step count falls strictly inside a group of tied values (only
    then do the random and the row-major rule give different curves)."""
    flat = -np.sort(-maps.reshape(maps.shape[0], -1), axis=1)
    inner = counts[(counts > 0) & (counts < flat.shape[1])]
    return np.any(flat[:, inner - 1] == flat[:, inner], axis=1)


def row_major_auc(
    model: torch.nn.Module,
    images: np.ndarray,
    maps: np.ndarray,
    labels: np.ndarray,
    random_auc: list[np.ndarray],
    counts: np.ndarray,
    causal: dict[str, int],
) -> list[np.ndarray]:
    """Deletion and Insertion AUC with row-major ties, run only on the images whose curves
    differ from the random-order ones (the others are copied)."""
    cut = cuts_a_tie(maps, counts)
    results = [auc.copy() for auc in random_auc]
    if cut.any():
        for result, metric in zip(results, (deletion, insertion), strict=True):
            result[cut] = metric(
                model, images[cut], maps[cut], labels[cut], ties="row-major", **causal
            ).auc
    return results


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the per-image differences ``a - b`` (both ``(N,)``, N >= 2):
    ``mean(d)`` and ``std(d, ddof=1) / sqrt(N)``."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))


def pair_values(
    values: dict[str, list[np.ndarray]], a: str, b: str
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per column, the per-image values of ``a`` and ``b`` to compare, or None where there is no
    comparison. Win % vs Grad-CAM is already a comparison with Grad-CAM: ``a``'s per-image wins
    are compared with 50 (no preference) when ``b`` is Grad-CAM, and left out otherwise."""
    pairs: list[tuple[np.ndarray, np.ndarray] | None] = []
    for index in range(len(COLUMNS) + len(EXTRA_COLUMNS)):
        first, second = values[a][index], values[b][index]
        if index == 2:  # Win % vs Grad-CAM
            pairs.append(
                None if b != REFERENCE or first is None else (first, np.full_like(first, 50.0))
            )
        elif first is None or second is None:
            pairs.append(None)
        else:
            pairs.append((first, second))
    return pairs


def verdict(differences: list[tuple[float, float]]) -> str:
    """Whether a difference replicates, from its ``(mean, standard error)`` on each seed:
    ``"identical"`` (0 on every image of every seed), ``"holds, +"`` / ``"holds, \u2212"``
    (a minus sign; beyond twice the standard error with the same sign on every seed),
    ``"within noise"`` (within it on every seed) or ``"mixed"`` (anything else: beyond on some
    seeds only, or signs differ)."""
    if all(mean == 0 and se == 0 for mean, se in differences):
        return "identical"
    beyond = [abs(mean) > 2 * se for mean, se in differences]
    signs = {np.sign(mean) for mean, _ in differences}
    if all(beyond) and len(signs) == 1:
        return "holds, +" if signs == {1.0} else "holds, \u2212"
    if not any(beyond):
        return "within noise"
    return "mixed"


def replication_table(
    runs: dict[str, dict[int, dict[str, list[np.ndarray]]]], a: str, b: str
) -> str:
    """A Markdown table of ``a - b`` per column (rows) and setting (columns): the mean ± s.e. on
    each seed (``*`` beyond 2 s.e.), then the verdict (``verdict``); **bold** where it holds.

    ``runs[setting][seed]`` holds the per-image values of ``evaluate``."""
    settings = list(runs)
    lines = [
        "| metric | " + " | ".join(settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for index, column in enumerate(COLUMNS + EXTRA_COLUMNS):
        cells = []
        for setting in settings:
            per_seed = [pair_values(values, a, b)[index] for values in runs[setting].values()]
            if any(pair is None for pair in per_seed):
                cells.append(None)
                continue
            differences = [paired_difference(*pair) for pair in per_seed if pair is not None]
            decimals = 1 if "%" in column else 3
            shown = ", ".join(
                f"{mean:+.{decimals}f} ± {se:.{decimals}f}" + ("*" if abs(mean) > 2 * se else "")
                for mean, se in differences
            )
            result = verdict(differences)
            text = f"{shown}: {result}"
            cells.append(f"**{text}**" if result.startswith("holds") else text)
        if all(cell is None for cell in cells):
            continue
        lines.append(f"| {column} | " + " | ".join(c or "—" for c in cells) + " |")
    return "\n".join(lines)


def paired_table(values: dict[str, list[np.ndarray]]) -> str:
    """Mean and standard error of the per-image difference ``COMPARED - REFERENCE`` for each
    column where both have per-image values, and whether it exceeds twice its standard error."""
    columns = COLUMNS + EXTRA_COLUMNS
    lines = [
        f"| metric | {COMPARED} minus {REFERENCE} | ± s.e. | beyond 2 s.e.? |",
        "|---|---:|---:|---|",
    ]
    for index, column in enumerate(columns):
        a, b = values[COMPARED][index], values[REFERENCE][index]
        if a is None or b is None:
            continue
        diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        mean, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))
        decimals = 1 if "%" in column else 3
        if se == 0 and mean == 0:
            verdict = "no (identical on every image)"
        else:
            verdict = "yes" if abs(mean) > 2 * se else "no (within noise)"
        lines.append(f"| {column} | {mean:+.{decimals}f} | {se:.{decimals}f} | {verdict} |")
    return "\n".join(lines)


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


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"--seeds must be distinct integers, comma-separated (e.g. 0,7), got {text!r}"
        )
    return seeds


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="images per setting and seed")
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=[0, 7],
        help="data and random-map seeds, comma-separated; each setting runs on every seed "
        "(default 0,7)",
    )
    parser.add_argument("--steps", type=int, default=16, help="Deletion/Insertion steps")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument(
        "--n-orders", type=int, default=8, help="random orders per tie group (Deletion/Insertion)"
    )
    parser.add_argument(
        "--sanity-n", type=int, default=100, help="images for the randomisation check"
    )
    parser.add_argument(
        "--models", default="gap,fc", help="demo models, comma-separated: gap, fc (default both)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/quality.md"), help="Markdown output"
    )
    args = parser.parse_args(argv)
    heads = [h.strip() for h in args.models.split(",") if h.strip()]
    if not heads or any(h not in MODELS for h in heads):
        parser.error(f"--models must list some of {tuple(MODELS)}, got {args.models!r}")
    if args.n < 2:
        parser.error(f"--n must be at least 2 (a standard error needs two images), got {args.n}")
    torch.set_num_threads(args.threads)
    shown_args = {**vars(args), "seeds": ",".join(str(seed) for seed in args.seeds)}
    command = "PYTHONPATH=src python -m benchmarks.quality " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in shown_args.items()
    )
    seeds_text = ", ".join(str(seed) for seed in args.seeds)
    started = time.perf_counter()
    parts = [
        "# Explanation quality on the demo shapes",
        "",
        f"Command: `{command}`  ",
        f"Seeds: {seeds_text} (each seed draws its own images and random maps); {args.n} images "
        "per setting and seed; true classes explained; "
        f"Deletion/Insertion in {args.steps} steps (deleted pixels set to 0, insertion from a "
        "Gaussian blur with sigma 5 px), tied pixels in random order (expected curve, "
        f"{args.n_orders} seeded orders where a tie group cannot be enumerated) unless marked "
        f"row-major; pointing tolerance {TOLERANCE:g} px; Loc(delta) as in the paper (values "
        "below delta set to 0, the rest kept) unless marked binarised; Loc, energy and "
        "pointing over the union of the boxes; instance recall: share of instances (boxes) "
        f"holding >= {MIN_SHARE:g} of the map's energy; peak instance recall: share of "
        f"instances whose brightest pixel reaches {MIN_PEAK:g} of the normalised map; all "
        "instances reached: share of images where that recall is 1; Gaussian map sigma = "
        f"{GAUSSIAN_SIGMA:g} x image side; Increase in Confidence and Win % treat differences "
        f"<= {TOL:g} as none; Win % counts ties as half. "
        "± s.e.: the largest standard error of a mean in the column.",
    ]
    runs: dict[str, dict[int, dict[str, list[np.ndarray]]]] = {}
    for head in heads:
        model = load_demo_model(head)
        parts += ["", f"## Model `{head}`: {MODELS[head]}"]
        for title, instances in SETTINGS:
            label = f"`{head}`, {title.split(' ')[0].replace('-instance', '')}"
            runs[label] = {}
            for seed in args.seeds:
                scores, errors, accuracy, values = evaluate(
                    model,
                    args.n,
                    seed,
                    instances,
                    steps=args.steps,
                    batch_size=args.batch_size,
                    n_orders=args.n_orders,
                )
                runs[label][seed] = values
                main_cols = len(COLUMNS)
                parts += [
                    "",
                    f"### `{head}`, {title} images, seed {seed} (model accuracy "
                    f"{100 * accuracy:.1f}%)",
                    "",
                    table(
                        {k: v[:main_cols] for k, v in scores.items()},
                        {k: v[:main_cols] for k, v in errors.items()},
                    ),
                    "",
                    "Deletion and Insertion with tied pixels in row-major order (the rule of "
                    "earlier versions), Loc(delta) binarised, the share of pixels where the "
                    "normalised map is above 0, and instance coverage by peak and by energy:",
                    "",
                    table(
                        {k: v[main_cols:] for k, v in scores.items()},
                        {k: v[main_cols:] for k, v in errors.items()},
                        EXTRA_COLUMNS,
                        0,
                    ),
                    "",
                    f"Paired differences on the same {args.n} images:",
                    "",
                    paired_table(values),
                ]
                print(
                    f"{head}, {title}, seed {seed}: done after "
                    f"{time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                )
                _write(args.out, [*parts, "", "(incomplete: the run is still going)"])
        for seed in args.seeds:
            parts += [
                "",
                f"### `{head}`, sanity check: cascading randomisation ({args.sanity_n} images, "
                f"1-4 instances, seed {seed})",
                "",
                "Mean Spearman rank correlation between each image's map from the trained model "
                "and from a copy whose layers are re-initialised from the output down to the "
                "named layer (Adebayo et al. 2018); low values pass.",
                "",
                sanity_table(model, args.sanity_n, seed, args.batch_size),
            ]
    parts += [
        "",
        "## Which differences replicate",
        "",
        f"Each cell: the paired difference A minus B, mean ± standard error on seed {seeds_text} "
        "in that order (`*`: beyond twice its standard error), then the verdict: **holds, +** or "
        "**holds, \u2212** when it is beyond twice its standard error with the same sign on every "
        "seed; *within noise* when it is within on every seed; *mixed* otherwise; *identical* "
        "when the two scored the same on every image. Arrows give the better direction of each "
        "metric. Win % vs Grad-CAM is compared with 50 (no preference).",
    ]
    for a, b in PAIRS:
        parts += ["", f"### {a} minus {b}", "", replication_table(runs, a, b)]
    parts += ["", f"Run time: {time.perf_counter() - started:.0f} s, torch {torch.__version__}."]
    text = _write(args.out, parts)
    print(text)
    return text


def _write(path: Path, parts: list[str]) -> str:
    text = "\n".join(parts) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
