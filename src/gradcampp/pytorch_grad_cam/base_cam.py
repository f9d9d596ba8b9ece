"""The call pytorch-grad-cam's CAM classes share, on gradcampp's explainers.

One call, for inputs ``(N, C, H, W)`` and ``L`` target layers:

1. for each layer, one forward pass and one backward pass through the layers after it give its
   activations ``A`` ``(N, K, h, w)`` and the gradients ``g`` of each sample's target score;
2. the layer's map is ``relu(sum_k w_k A^k)`` (or, with ``eigen_smooth``, ``relu`` of the
   projection of ``w_k A^k`` on its first principal component, ``formulas.first_component_map``);
3. ``variant="pytorch-grad-cam"``: each map is min-max scaled as pytorch-grad-cam scales it,
   ``m <- (m - min m) / (1e-7 + max(m - min m))``, then resized to ``(H, W)`` with linear
   interpolation (OpenCV's bilinear); ``variant="paper"``: resized bicubically and clipped at 0,
   then scaled exactly, ``(m - min m) / (max m - min m)`` (0 for a constant map: the ``1e-7``
   above dominates maps whose range is below about ``1e-6``, as on some untrained networks);
4. the ``L`` maps of a sample are averaged and the mean is scaled again.

With ``aug_smooth`` the whole call runs on six copies of the inputs (not flipped and flipped
left-right, each multiplied by 0.9, 1 and 1.1), the maps of flipped copies are flipped back, and
the six maps are averaged (not scaled again), as pytorch-grad-cam's test-time augmentation does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch

from gradcampp import explainers
from gradcampp._xp import to_numpy
from gradcampp.formulas import first_component_map
from gradcampp.pytorch_grad_cam.utils.image import scale_cam_image
from gradcampp.resize import resize
from gradcampp.targets import PlanRecorder, parse_targets

#: The test-time augmentations of ``aug_smooth``: (flip left-right, brightness factor).
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)
)
VARIANTS = ("pytorch-grad-cam", "paper")


class BaseCAM:
    """A class activation map method with pytorch-grad-cam 1.5's interface.

    Args:
        model: a ``torch.nn.Module``; it is not modified (pytorch-grad-cam calls ``model.eval()``
            for good and zeroes its gradients; here the call runs in eval mode and restores every
            module's flag, and no parameter gradient is computed).
        target_layers: a list of the modules whose outputs are explained; several are combined
            as pytorch-grad-cam combines them (the mean of their scaled maps, scaled again).
        reshape_transform: ``None`` or a callable from a layer's output to ``(N, C, h, w)``,
            applied to activations and gradients (transformers); without it, tokens and
            channels-last outputs are laid on the input's grid when only one reading fits.
        variant: ``"pytorch-grad-cam"`` (default): pytorch-grad-cam 1.5.7's numbers (its
            Grad-CAM++ epsilon, its bilinear resize, its scaling); ``"paper"``: the exact
            Grad-CAM++ weights of the paper (Eq. 19), bicubic upsampling and exact min-max
            scaling to ``[0, 1]``.

    Attributes:
        outputs: the model's outputs of the latest call (of its last pass), detached.

    Raises:
        TypeError: for ``target_layers`` that is not a non-empty list of modules, or a model that
            is not a ``torch.nn.Module``.
        ValueError: for an unknown ``variant``, or a layer that is not a submodule of ``model``.
    """

    _explainer: type[explainers.GradCAM] = explainers.GradCAM

    def __init__(
        self,
        model: torch.nn.Module,
        target_layers: Sequence[torch.nn.Module],
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        variant: str = "pytorch-grad-cam",
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if (
            not isinstance(target_layers, list | tuple)
            or not target_layers
            or not all(isinstance(layer, torch.nn.Module) for layer in target_layers)
        ):
            raise TypeError(
                "target_layers must be a non-empty list of modules of the model, e.g. "
                f"[model.layer4[-1]]; got {type(target_layers).__name__}"
            )
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.model = model
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        self.variant = variant
        self.outputs: Any = None
        self._explainers = [
            self._explainer(
                model,
                conv_layer=layer,
                variant=variant,  # type: ignore[arg-type]
                reshape_transform=reshape_transform,
            )
            for layer in self.target_layers
        ]

    def __call__(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Callable[[Any], Any]] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Maps of ``targets`` for ``input_tensor``, scaled to ``[0, 1]``.

        Args:
            input_tensor: ``(N, C, H, W)`` tensor (moved to the model's device and dtype).
            targets: ``None`` (each sample's highest-scoring class) or a list of ``N`` target
                objects, target ``i`` called on sample ``i``'s output (``ClassifierOutputTarget``
                and the others of ``utils.model_targets``, or any such callable); a list of ``N``
                class indices is read as ``ClassifierOutputTarget`` of each.
            aug_smooth: average the maps over six flipped and brightened copies of the inputs.
            eigen_smooth: project the weighted activations on their first principal component
                instead of summing them.

        Returns:
            float32 NumPy maps ``(N, H, W)``, each scaled to ``[0, 1]`` (all zeros for a constant
            map, e.g. a layer with a 1 x 1 output, which also warns).

        Raises:
            ValueError, TypeError: for inputs or targets that do not fit (the message says what
                was expected); ``ValueError`` when a map is not finite.
        """
        if aug_smooth:
            return self.forward_augmentation_smoothing(input_tensor, targets, eigen_smooth)
        return self.forward(input_tensor, targets, eigen_smooth)

    def forward(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Callable[[Any], Any]] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """One call without test-time augmentation (see ``__call__``)."""
        per_layer = [
            self._layer_map(explainer, input_tensor, targets, eigen_smooth)
            for explainer in self._explainers
        ]
        mean = np.mean(np.stack(per_layer, axis=1), axis=1)
        return self._scale(mean)

    def _scale(self, maps: np.ndarray) -> np.ndarray:
        """Each map scaled to ``[0, 1]``: as pytorch-grad-cam does, or exactly (``"paper"``)."""
        if self.variant == "pytorch-grad-cam":
            return scale_cam_image(maps)
        axes = tuple(range(1, maps.ndim))
        shifted = maps - maps.min(axis=axes, keepdims=True)
        spread = shifted.max(axis=axes, keepdims=True)
        return np.where(spread > 0, shifted / np.where(spread > 0, spread, 1), 0).astype(np.float32)

    def forward_augmentation_smoothing(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Callable[[Any], Any]] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The mean of the maps of six augmented copies of the inputs (see the module docstring)."""
        x = torch.as_tensor(input_tensor)
        cams = []
        for flip, factor in AUGMENTATIONS:
            augmented = x * factor if factor != 1.0 else x
            if flip:
                augmented = augmented.flip(-1)
            cam = self.forward(augmented, targets, eigen_smooth)
            cams.append(cam[..., ::-1] if flip else cam)
        return np.mean(np.stack(cams).astype(np.float32), axis=0)

    def _layer_map(
        self,
        explainer: explainers.GradCAM,
        input_tensor: Any,
        targets: Sequence[Callable[[Any], Any]] | None,
        eigen_smooth: bool,
    ) -> np.ndarray:
        """One layer's map, resized to the input and scaled: ``(N, H, W)`` float32."""
        backend = explainer.backend
        batch = backend.prepare(input_tensor)
        n = int(batch.x.shape[0])
        if targets is not None and not isinstance(targets, list | tuple):
            raise TypeError(
                "targets must be None or a list of one target object per input (e.g. "
                f"[ClassifierOutputTarget(281)] * {n}), got {type(targets).__name__}"
            )
        recorder = PlanRecorder(parse_targets(None if targets is None else list(targets), n))
        acts, grads = backend.capture(batch.x, recorder, 0, n)
        self.outputs = recorder.outputs
        if self.variant == "pytorch-grad-cam":
            # NumPy float32 on the CPU, in pytorch-grad-cam's order of operations: its maps are
            # then reproduced to rounding even where min-max scaling magnifies small differences
            acts, grads = to_numpy(acts), to_numpy(grads)
        weights = explainer._weights(acts, grads)[:, 0]
        weighted = weights.reshape(*weights.shape, *([1] * (acts.ndim - 2))) * acts
        if eigen_smooth:
            cam = first_component_map(to_numpy(weighted))
        else:
            cam = to_numpy(weighted.sum(1))
        if not np.isfinite(cam).all():
            raise ValueError(
                "the class activation map is not finite: the layer's activations or gradients "
                "overflow; run the model in float32"
            )
        cam = np.maximum(cam, 0).astype(np.float32)
        size = batch.spatial
        if self.variant == "pytorch-grad-cam":
            return scale_cam_image(cam, tuple(reversed(size)))
        return self._scale(np.maximum(resize(cam, size), 0))

    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """End of a ``with`` block. The model holds no hook between calls, so nothing is left
        to remove; exceptions propagate (pytorch-grad-cam 1.5.7 swallows an ``IndexError``
        raised in the block; this does not)."""
        return None
