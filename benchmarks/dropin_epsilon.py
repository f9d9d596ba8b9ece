"""What pytorch-grad-cam's epsilon does to Grad-CAM++ maps, and how closely the drop-in follows it.

For torchvision networks with seeded random weights on random inputs (the networks of
pytorch-grad-cam's own tests), each explained at its last feature map for the predicted classes,
the script prints one Markdown table row per network:

- ``median |g|``: the median of the non-zero gradients at the layer;
- ``weights rel. L2``: ``||u_eps - u||`` with ``u = w / ||w||`` the Grad-CAM++ channel weights
  scaled to unit length, ``u_eps`` with pytorch-grad-cam's ``1e-6`` in the denominator of Eq. 19
  and ``u`` without (a change of direction, not of scale), median over images;
- ``epsilon only``: the largest difference between the two maps after pytorch-grad-cam's own
  post-processing (scaling to ``[0, 1]``, bilinear resize, scaling again), maximum over images;
- ``same peak``: share of images whose two maps peak within 2 pixels of each other;
- ``drop-in vs pytorch-grad-cam``: the largest difference between the maps of
  ``gradcampp.pytorch_grad_cam.GradCAMPlusPlus`` (default variant) and of pytorch-grad-cam 1.5.7
  itself, maximum over images (the reproduction's error);
- ``drop-in vs variant="paper"``: the same call with the exact weights and bicubic upsampling.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/dropin_epsilon.py --n 4 \
        --out benchmarks/results/dropin_epsilon.md
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch
import torchvision

from gradcampp import GradCAMPP
from gradcampp.formulas import gradcampp_weights
from gradcampp.pytorch_grad_cam import GradCAMPlusPlus
from gradcampp.pytorch_grad_cam.utils.image import scale_cam_image
from gradcampp.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from gradcampp.targets import parse_targets

#: network -> explained layer (not one followed by an in-place activation, see the tests)
MODELS = {
    "resnet18": "layer4",
    "vgg11": "features.19",
    "densenet161": "features.denseblock4",
    "mobilenet_v2": "features.18",
    "efficientnet_b0": "features.8",
}


def _unit(weights: np.ndarray) -> np.ndarray:
    return weights / np.maximum(np.linalg.norm(weights, axis=-1, keepdims=True), 1e-30)


def _peak(maps: np.ndarray) -> np.ndarray:
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, maps.shape[1:]), axis=1)


def row(arch: str, n: int, size: int, seed: int) -> list[str]:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    layer = dict(model.named_modules())[MODELS[arch]]
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        classes = model(x).argmax(dim=1)
    explainer = GradCAMPP(model, conv_layer=layer)
    batch = explainer.backend.prepare(x)
    acts, grads = explainer.backend.capture(batch.x, parse_targets(classes.numpy(), n), 0, n)
    acts, grads = acts.numpy(), grads.numpy()
    nonzero = np.abs(grads[grads != 0])
    exact = gradcampp_weights(acts, grads, "paper")[:, 0]
    with_eps = gradcampp_weights(acts, grads, "pytorch-grad-cam")[:, 0]
    direction = np.median(np.linalg.norm(_unit(with_eps) - _unit(exact), axis=-1))
    maps = []
    for weights in (with_eps, exact):
        cam = np.maximum(np.einsum("nk,nk...->n...", weights, acts), 0)
        # pytorch-grad-cam's post-processing: scaled, resized, scaled again (as for one layer)
        maps.append(scale_cam_image(scale_cam_image(cam, (size, size))))
    epsilon_only = np.abs(maps[0] - maps[1]).max()
    same_peak = (np.abs(_peak(maps[0]) - _peak(maps[1])).max(axis=1) <= 2).mean()

    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    with GradCAMPlusPlus(model=model, target_layers=[layer]) as cam:
        dropin = cam(input_tensor=x, targets=targets)
    with GradCAMPlusPlus(model=model, target_layers=[layer], variant="paper") as cam:
        paper = cam(input_tensor=x, targets=targets)
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils import model_targets

        their_targets = [model_targets.ClassifierOutputTarget(int(c)) for c in classes]
        with pytorch_grad_cam.GradCAMPlusPlus(model=model, target_layers=[layer]) as cam:
            theirs = cam(input_tensor=x, targets=their_targets)
        reproduction = f"{np.abs(dropin - theirs).max():.1e}"
    except ImportError:
        reproduction = "not installed"
    return [
        arch,
        f"`{MODELS[arch]}`",
        f"{np.median(nonzero):.1e}",
        f"{direction:.3f}",
        f"{epsilon_only:.3f}",
        f"{same_peak:.0%}",
        reproduction,
        f"{np.abs(dropin - paper).max():.3f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, help="images per network")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archs", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    header = [
        "network",
        "layer",
        "median \\|g\\|",
        "weights rel. L2",
        "epsilon only: max \\|diff\\|",
        "same peak",
        "drop-in vs pytorch-grad-cam: max \\|diff\\|",
        'drop-in vs `variant="paper"`: max \\|diff\\|',
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for arch in args.archs:
        lines.append("| " + " | ".join(row(arch, args.n, args.size, args.seed)) + " |")
        print(lines[-1], flush=True)
    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    try:
        from importlib.metadata import version

        versions += f", grad-cam {version('grad-cam')}"
    except Exception:
        pass
    text = "\n".join(
        [
            *lines,
            "",
            f"{args.n} random images of {args.size} x {args.size} per network, seed {args.seed};"
            f" maps in [0, 1]. `PYTHONPATH=src python benchmarks/dropin_epsilon.py --n {args.n}`;"
            f" {versions}, Python {platform.python_version()}.",
        ]
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
