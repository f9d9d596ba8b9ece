"""Render the documentation's figures from the bundled demo model.

    PYTHONPATH=src python docs/make_figures.py --out docs/figures

The site's build runs this (``docs/hooks.py``), so the figures always show what the code computes
on the demo network; nothing in them is drawn by hand. Images come from the demo's seeded
generator; white outlines are the ground-truth masks of the shapes.

Figures:

- ``gradcampp_vs_gradcam.png``: single- and multi-instance images, Grad-CAM++ next to Grad-CAM;
- ``variants.png``: the Grad-CAM++ variants ``"paper"``, ``"xplique"``, ``"authors"`` and Grad-CAM
  on multi-instance images, each map min-max normalised.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from gradcampp import GradCAM, GradCAMPP
from gradcampp.demo import CLASSES, generate_shapes, load_demo_model
from gradcampp.viz import overlay, to_rgb

SEED = 7


def _panel(ax: Any, picture: np.ndarray, masks: np.ndarray, title: str | None) -> None:
    ax.imshow(picture)
    for mask in masks:
        ax.contour(mask, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _grid(
    images: np.ndarray,
    masks: list[np.ndarray],
    columns: dict[str, np.ndarray],
    row_labels: list[str],
    path: Path,
) -> None:
    n = len(images)
    fig, axes = plt.subplots(n, 1 + len(columns), figsize=(1.9 * (1 + len(columns)), 1.9 * n))
    axes = np.atleast_2d(axes)
    for i in range(n):
        _panel(axes[i, 0], to_rgb(images[i]), masks[i], "image" if i == 0 else None)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=9)
        for j, (name, maps) in enumerate(columns.items(), start=1):
            _panel(axes[i, j], overlay(images[i], maps[i]), masks[i], name if i == 0 else None)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def make_figures(out: Path) -> list[Path]:
    """Render every figure into ``out``; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    model = load_demo_model()
    single = generate_shapes(3, SEED, instances=1)
    multi = generate_shapes(3, SEED, instances=(2, 4))
    images = np.concatenate([single.images, multi.images])
    labels = np.concatenate([single.labels, multi.labels])
    masks = single.instance_masks + multi.instance_masks
    rows = [f"{CLASSES[c]} x{len(m)}" for c, m in zip(labels, masks, strict=True)]

    written = []
    path = out / "gradcampp_vs_gradcam.png"
    _grid(
        images,
        masks,
        {
            "Grad-CAM++": GradCAMPP(model).explain(images, labels),
            "Grad-CAM": GradCAM(model).explain(images, labels),
        },
        rows,
        path,
    )
    written.append(path)

    path = out / "variants.png"
    columns = {
        f'"{variant}"': GradCAMPP(model, variant=variant).explain(multi.images, multi.labels)
        for variant in ("paper", "xplique", "authors")
    }
    columns["Grad-CAM"] = GradCAM(model).explain(multi.images, multi.labels)
    _grid(multi.images, multi.instance_masks, columns, rows[3:], path)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Render the documentation's figures.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    args = parser.parse_args(argv)
    for path in make_figures(args.out):
        print(path)


if __name__ == "__main__":
    main()
