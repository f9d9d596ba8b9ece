"""Evaluate a shipped demo model on freshly generated images; print a Markdown table.

Usage (from the repository root):
    PYTHONPATH=src python scripts/evaluate_demo.py [--n 1000] [--head gap|fc]

Reports, for single-instance and multi-instance images drawn with seeds the training never uses,
the classification accuracy and, for Grad-CAM++ and Grad-CAM maps of the true class, the share of
images whose map maximum lies on a ground-truth instance mask, the share inside an instance box,
and the median distance from a missed maximum to the nearest instance pixel.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from gradcampp import GradCAM, GradCAMPP
from gradcampp.demo import ShapesBatch, generate_shapes, load_demo_model

EVAL_SEED = 1_000_000  # the held-out seeds of scripts/train_demo.py


def peak_hits(maps: np.ndarray, batch: ShapesBatch) -> tuple[float, float, float]:
    """Where the maxima of maps ``(n, H, W)`` fall relative to the ground truth of ``batch``.

    Returns:
        the share of maxima on an instance mask pixel, the share inside an instance box, and the
        median distance in pixels from a missed maximum to the nearest mask pixel (0 if none).
    """
    n, height, width = maps.shape
    rows, cols = np.unravel_index(maps.reshape(n, -1).argmax(1), (height, width))
    in_mask, in_box, miss_distance = [], [], []
    for masks, boxes, r, c in zip(batch.instance_masks, batch.boxes, rows, cols, strict=True):
        in_mask.append(bool(masks[:, r, c].any()))
        x0, y0, x1, y1 = boxes.T
        in_box.append(bool(((x0 <= c) & (c < x1) & (y0 <= r) & (r < y1)).any()))
        if not in_mask[-1]:
            mask_rows, mask_cols = np.nonzero(masks.any(axis=0))
            miss_distance.append(float(np.hypot(mask_rows - r, mask_cols - c).min()))
    median_miss = float(np.median(miss_distance)) if miss_distance else 0.0
    return float(np.mean(in_mask)), float(np.mean(in_box)), median_miss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per group")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--head", choices=("gap", "fc"), default="gap", help="which demo model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_demo_model(args.head)
    groups = {
        "1 instance": generate_shapes(args.n, EVAL_SEED, instances=1),
        "2-4 instances": generate_shapes(args.n, EVAL_SEED + 1, instances=(2, 4)),
    }
    print(
        f"| images ({args.n} each) | accuracy | Grad-CAM++ peak: in mask, in box, median miss "
        "| Grad-CAM peak: in mask, in box, median miss |"
    )
    print("|---|---|---|---|")
    for name, batch in groups.items():
        with torch.no_grad():
            predicted = model(torch.from_numpy(batch.images)).argmax(1).numpy()
        accuracy = float((predicted == batch.labels).mean())
        cells = []
        for explainer in (GradCAMPP(model), GradCAM(model)):
            in_mask, in_box, miss = peak_hits(explainer.explain(batch.images, batch.labels), batch)
            cells.append(f"{in_mask:.3f}, {in_box:.3f}, {miss:.1f} px")
        print(f"| {name} | {accuracy:.3f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
