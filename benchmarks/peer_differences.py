"""How far Grad-CAM++ maps move between our variants and pytorch-grad-cam, on one model.

Prints a Markdown table (the numbers quoted on the docs' migration page):

    PYTHONPATH=src python benchmarks/peer_differences.py --model resnet18 --n 16
    PYTHONPATH=src python benchmarks/peer_differences.py --model demo --n 64

Each row compares one way of computing Grad-CAM++ with ours (``variant="paper"``) on the same
images, layer and classes (the predicted ones). Maps are min-max normalised to ``[0, 1]`` per image
before comparing, because pytorch-grad-cam returns them that way. Columns:

- ``weights rel. L2``: ``||u - u_paper||`` with ``u = w / ||w||`` the channel weights scaled to
  unit length (a difference of direction, not of scale), median over images; only for rows that
  share our activations and gradients, so that only the formula differs;
- ``map mean |diff|`` / ``map max |diff|``: mean and maximum absolute difference of the
  normalised maps, median over images;
- ``same peak``: share of images whose maps peak within 2 pixels of each other.

The models: ``resnet18`` is torchvision's ResNet-18 with random seeded weights on random inputs
(224 x 224, explained at ``layer4``); ``demo`` is the bundled demo CNN on its generated shapes.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from gradcampp import GradCAMPP
from gradcampp.formulas import class_activation_map, gradcampp_weights
from gradcampp.resize import resize


def _model_and_inputs(name: str, n: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, str]:
    torch.manual_seed(seed)
    if name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None).eval()
        images = torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
        return model, images, "layer4"
    if name == "demo":
        from gradcampp.demo import generate_shapes, load_demo_model

        model = load_demo_model()
        images = torch.from_numpy(generate_shapes(n, seed).images)
        return model, images, ""
    raise ValueError(f"--model must be resnet18 or demo, got {name!r}")


def _capture(
    model: torch.nn.Module, layer: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Activations and gradients of the class scores at ``layer``, with plain hooks."""
    store: dict[str, torch.Tensor] = {}

    def hook(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        output.retain_grad()
        store["acts"] = output

    handle = layer.register_forward_hook(hook)
    try:
        outputs = model(images.clone().requires_grad_(False))
        outputs.gather(1, labels[:, None]).sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    acts = store["acts"]
    return acts.detach().numpy(), acts.grad.numpy()


def _normalise(maps: np.ndarray) -> np.ndarray:
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    return ((flat - low) / np.where(span > 0, span, 1.0)).reshape(maps.shape)


def _peaks_close(a: np.ndarray, b: np.ndarray, tolerance: int = 2) -> np.ndarray:
    shape = a.shape[1:]
    pa = np.stack(np.unravel_index(a.reshape(len(a), -1).argmax(axis=1), shape), axis=1)
    pb = np.stack(np.unravel_index(b.reshape(len(b), -1).argmax(axis=1), shape), axis=1)
    return np.abs(pa - pb).max(axis=1) <= tolerance


def _row(name: str, ours: np.ndarray, theirs: np.ndarray, weight_diff: str) -> str:
    a, b = _normalise(ours), _normalise(theirs)
    diff = np.abs(a - b).reshape(len(a), -1)
    return (
        f"| {name} | {weight_diff} | {np.median(diff.mean(axis=1)):.3f} | "
        f"{np.median(diff.max(axis=1)):.3f} | {100 * _peaks_close(a, b).mean():.0f}% |"
    )


def _rel_l2(w: np.ndarray, ref: np.ndarray) -> str:
    """Median over images of ``||u - v||`` with ``u, v`` the weights scaled to unit length."""

    def unit(x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0)

    return f"{np.median(np.linalg.norm(unit(w) - unit(ref), axis=1)):.3f}"


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "demo"])
    parser.add_argument("--n", type=int, default=16, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, images, layer_name = _model_and_inputs(args.model, args.n, args.seed)
    explainer = GradCAMPP(model, conv_layer=layer_name or None)
    layer_name = layer_name or explainer.backend.layer_name(images)
    layer = dict(model.named_modules())[layer_name]
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    spatial = tuple(images.shape[2:])

    acts, grads = _capture(model, layer, images, labels)
    g = grads[:, None]
    w_paper = gradcampp_weights(acts, g, "paper")

    def map_from(weights: np.ndarray) -> np.ndarray:
        return resize(class_activation_map(acts, weights), spatial)[:, 0]

    maps = {
        variant: GradCAMPP(model, conv_layer=layer_name, variant=variant).explain(
            images.numpy(), labels.numpy()
        )
        for variant in ("paper", "xplique", "authors")
    }

    pgc = GradCAMPlusPlus(model, target_layers=[layer])
    pgc_weights = pgc.get_cam_weights(None, None, None, acts, grads)[:, None, :]
    pgc_maps = pgc(images, targets=[ClassifierOutputTarget(int(c)) for c in labels])
    pgc.activations_and_grads.release()
    model.zero_grad(set_to_none=True)

    rows = [
        _row(
            '`variant="xplique"`',
            maps["paper"],
            maps["xplique"],
            _rel_l2(gradcampp_weights(acts, g, "xplique"), w_paper),
        ),
        _row(
            '`variant="authors"`',
            maps["paper"],
            maps["authors"],
            _rel_l2(gradcampp_weights(acts, g, "authors"), w_paper),
        ),
        _row(
            "pytorch-grad-cam's formula (1e-6 added), our resize",
            maps["paper"],
            np.maximum(map_from(pgc_weights), 0.0),
            _rel_l2(pgc_weights, w_paper),
        ),
        _row(
            "pytorch-grad-cam 1.5.7 `GradCAMPlusPlus` (its formula and bilinear resize)",
            maps["paper"],
            pgc_maps,
            "—",
        ),
    ]
    median_g = float(np.median(np.abs(grads[grads != 0])))
    print(
        f"Model: {args.model} (layer `{layer_name}`, {acts.shape[1]} channels, "
        f"{'x'.join(map(str, acts.shape[2:]))} positions), {args.n} images, seed {args.seed}; "
        f"median |g| over non-zero gradients: {median_g:.2e}.\n"
    )
    print(
        '| compared with ours (`variant="paper"`) | weights rel. L2 | map mean \\|diff\\| '
        "| map max \\|diff\\| | same peak |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(row)
    print(
        f"\n`python benchmarks/peer_differences.py --model {args.model} --n {args.n} "
        f"--seed {args.seed}`; torch {torch.__version__}, Python {platform.python_version()}."
    )


if __name__ == "__main__":
    main()
