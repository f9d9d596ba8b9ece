"""The public explainers: ``GradCAM`` and ``GradCAMPP``.

Each call runs ``backend.capture -> formulas -> resize`` on chunks of ``batch_size`` inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gradcampp._xp import constant_like, namespace
from gradcampp.backends import backend_for
from gradcampp.formulas import (
    VARIANTS,
    Variant,
    class_activation_map,
    gradcam_weights,
    gradcampp_weights,
    smooth_gradcampp_weights,
)
from gradcampp.resize import resize
from gradcampp.targets import PlanRecorder, parse_targets


class GradCAM:
    """Grad-CAM (Selvaraju et al., ICCV 2017): ``relu(sum_k mean_ij(dY^c/dA_ij^k) A^k)``.

    The positional order is xplique 2.0.2's, ``(model, output_layer, batch_size, operator,
    conv_layer)``, so that replacing xplique's import changes nothing else; ``variant`` and
    ``reshape_transform`` are keyword-only.

    Args:
        model: a ``torch.nn.Module`` taking ``(N, C, *S)`` inputs, or a Keras 3 ``keras.Model``
            (on TensorFlow, JAX or PyTorch) taking channels-last ``(N, *S, C)`` inputs; 1, 2 or 3
            spatial dimensions.
        output_layer: where the explained score is read: ``None`` for the model's output, or a
            layer (in the forms of ``conv_layer``) whose output replaces it, e.g. the logits
            before a softmax (xplique's ``-2``).
        batch_size: inputs are processed in chunks of this many samples; the result does not
            depend on it.
        operator: xplique's scoring operator; only its default (``None``, classification: the
            sum of the outputs weighted by the targets) is supported. Pass other scores as a
            callable target to ``explain``.
        conv_layer: the explained layer: ``None`` for the default (below), a name (from
            ``model.named_modules()`` in PyTorch, any layer's name in Keras), an index into
            ``model.layers`` (Keras), or the module/layer itself.
        variant: ``"paper"`` (default): maps upsampled with the exact bicubic kernel and clipped
            at zero; ``"xplique"``: upsampled with TensorFlow's tabulated bicubic weights and not
            clipped, as xplique 2.0.2 does (small negative values occur), and on Keras models the
            default layer is xplique's (the last layer of ``model.layers`` with a ``filters``
            attribute: a convolution, before its normalisation and activation);
            ``"pytorch-grad-cam"``: upsampled with linear interpolation per axis (OpenCV's
            bilinear resize, as pytorch-grad-cam 1.5.7 does; maps are not min-max scaled here,
            ``gradcampp.pytorch_grad_cam`` does that).
        reshape_transform: PyTorch only: ``None`` (outputs are read as channels-first maps,
            channels-last maps or transformer tokens on the patch grid, whichever alone fits the
            input's shape) or a callable from the layer's output to ``(N, C, *S)``, applied to
            activations and gradients alike.

    The default layer is a feature map of the input (its spatial shape is the input's divided by
    one stride) found by probing one forward pass, or a ``ValueError`` naming the candidates:
    the last such map before the model's output layer; on transformers the last block's tokens
    on the patch grid; on torchvision detection and segmentation models the backbone's last
    feature map. ``conv_layer`` gives the layer that was explained.

    Raises:
        ValueError: for a ``batch_size`` that is not a positive integer, an unknown ``variant``,
            or a layer name the model does not have (the message lists the nearest names).
        TypeError: for a model that is neither a ``torch.nn.Module`` nor a Keras model, a layer
            given in none of the accepted forms, an ``operator`` other than classification, or
            a ``reshape_transform`` that is not callable.

    Examples:
        >>> maps = GradCAM(model).explain(images, labels)  # doctest: +SKIP
    """

    _variants: tuple[str, ...] = ("paper", "xplique", "pytorch-grad-cam")

    def __init__(
        self,
        model: Any,
        output_layer: Any = None,
        batch_size: int = 32,
        operator: Any = None,
        conv_layer: Any = None,
        *,
        variant: Variant = "paper",
        reshape_transform: Callable[[Any], Any] | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if variant not in self._variants:
            raise ValueError(f"variant must be one of {self._variants}, got {variant!r}")
        _check_operator(operator)
        self.model = model
        self.batch_size = batch_size
        self.variant = variant
        self.backend = backend_for(
            model,
            conv_layer,
            output_layer,
            reshape_transform,
            keras_default="xplique" if variant == "xplique" else "probe",
        )

    @property
    def conv_layer(self) -> Any:
        """The explained layer (module or Keras layer), as xplique's explainers expose it.

        The one given, or the default: on Keras models with a fixed input shape it is found when
        first asked for; otherwise it is the layer of the latest ``explain`` call (``None``
        before the first).
        """
        return self.backend.resolved_layer()

    def _weights(self, acts: Any, grads: Any) -> Any:
        return gradcam_weights(grads)

    def _begin(self, n: int) -> Any:
        """What one ``explain`` call of ``n`` samples needs in every chunk (kept out of ``self``,
        so that calls in several threads do not share it); ``None`` here."""
        return None

    def _chunk_maps(
        self, x: Any, plan: Any, start: int, stop: int, call: Any = None
    ) -> tuple[Any, Any, Any]:
        """Maps ``(n, T, *S')`` at the layer's resolution for inputs ``x`` (samples
        ``start:stop``), with the activations and gradients they came from."""
        acts, grads = self.backend.capture(x, plan, start, stop)
        return class_activation_map(acts, self._weights(acts, grads)), acts, grads

    def explain(self, inputs: Any, targets: Any = None, *, upsample: bool = True) -> Any:
        """Explain ``targets`` for ``inputs``.

        Args:
            inputs: PyTorch: a ``(N, C, *S)`` tensor or NumPy array, moved to the model's device
                and dtype. Keras: a channels-last ``(N, *S, C)`` ``tf.Tensor`` or NumPy array, or
                a ``tf.data.Dataset`` of inputs or of ``(input, target)`` pairs, batched or not
                (pairs give the targets; ``targets`` must then be ``None``). ``S`` of rank 1, 2
                or 3.
            targets: what to explain (see ``gradcampp.targets``): ``None`` (predicted class), an
                ``int``, class indices ``(N,)``, one-hot float rows ``(N, n_classes)``, a callable
                ``outputs -> (N,)`` scores, ``TopK(k)`` or ``Classes(indices)``.
            upsample: resize the maps to the inputs' spatial size ``S`` (bicubic); ``False`` returns
                them at the layer's resolution.

        Returns:
            float32 maps ``(N, *S)``, or ``(N, T, *S)`` for ``TopK``/``Classes`` targets, in the
            framework and on the device of ``inputs`` (NumPy for NumPy inputs). Keras models
            give a trailing channel axis as xplique does, ``(N, *S, 1)`` or ``(N, T, *S, 1)``: a
            ``tf.Tensor`` on TensorFlow, a tensor of the backend (NumPy for NumPy inputs) on JAX
            and PyTorch. Never NaN or Inf; never negative except under
            ``variant="xplique"``.

        Raises:
            ValueError, TypeError: for inputs, targets or a layer that do not fit (the message
                says what was expected and what was given).
        """
        batch = self.backend.prepare(inputs)
        if batch.targets is not None:
            if targets is not None:
                raise ValueError(
                    "inputs is a dataset of (input, target) pairs, which gives the targets; "
                    "pass targets=None"
                )
            targets = batch.targets
        n = batch.x.shape[0]
        plan = parse_targets(targets, n)
        call = self._begin(n)
        chunks = []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            maps, acts, grads = self._chunk_maps(batch.x[start:stop], plan, start, stop, call)
            xp = namespace(maps)
            if upsample:
                maps = resize(
                    maps,
                    batch.spatial,
                    kernel_table=self.variant == "xplique",
                    method="linear" if self.variant == "pytorch-grad-cam" else "cubic",
                )
            _check_finite(maps, acts, grads, xp)
            if self.variant != "xplique":
                maps = xp.maximum(maps, 0.0)  # bicubic overshoot below zero
            chunks.append(maps)
        maps = xp.concat(chunks, axis=0) if len(chunks) > 1 else chunks[0]
        return batch.finish(maps if plan.multi else maps[:, 0, ...])

    __call__ = explain


def _check_operator(operator: Any) -> None:
    """Accept xplique's default operator (classification) only."""
    if operator is None:
        return
    name = operator if isinstance(operator, str) else getattr(operator, "name", None)
    if isinstance(name, str) and name.lower() in ("classification", "regression"):
        return
    if getattr(operator, "__name__", None) == "predictions_operator":
        return
    raise TypeError(
        "operator: only xplique's classification operator (None) is supported, got "
        f"{operator!r}; pass another score as a callable target to explain(inputs, targets), "
        "e.g. gradcampp.targets.SegmentationTarget or DetectionTarget"
    )


def _check_finite(maps: Any, acts: Any, grads: Any, xp: Any) -> None:
    """Raise a ``ValueError`` naming the cause when ``maps`` hold a NaN or an infinity.

    One sum decides in the common case (a sum of finite float32 values overflows only when they
    are near the float32 limit); the element-wise tests run only on a bad sum.
    """
    if bool(xp.isfinite(xp.sum(maps))) or bool(xp.all(xp.isfinite(maps))):
        return
    if not bool(xp.all(xp.isfinite(acts))):
        cause = "the explained layer's activations hold NaN or Inf (the forward pass overflows)"
    elif not bool(xp.all(xp.isfinite(grads))):
        cause = (
            "the gradients of the explained score hold NaN or Inf (the model's gradients overflow)"
        )
    else:
        cause = "the weighted sum of the feature maps overflows float32"
    raise ValueError(f"the explanation is not finite: {cause}; run the model in float32")


class GradCAMPP(GradCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, Eq. 19).

    ``alpha_ij^k = g_ij^2 / (2 g_ij^2 + (sum_ab A_ab^k) g_ij^3)``,
    ``w_k = sum_ij alpha_ij^k relu(g_ij)``, map ``relu(sum_k w_k A^k)`` upsampled bicubically,
    with ``g = dS^c/dA`` the gradient of the raw class score (the paper's ``exp(S^c)`` factor is
    a positive per-sample constant, left out).

    Args:
        model: a ``torch.nn.Module`` taking ``(N, C, *S)`` inputs, or a Keras 3 model taking
            channels-last ``(N, *S, C)`` inputs (as for ``GradCAM``).
        output_layer: where the explained score is read: ``None`` for the model's output, or a
            layer whose output replaces it, e.g. the logits before a softmax.
        batch_size: inputs are processed in chunks of this many samples; the result does not
            depend on it.
        operator: xplique's operator; only its default (``None``, classification).
        conv_layer: the explained layer, in the forms accepted by ``GradCAM``; ``None`` for the
            default layer (a feature map of the input, as for ``GradCAM``).
        reshape_transform: PyTorch only: a callable from the layer's output to ``(N, C, *S)``
            (as for ``GradCAM``); ``None`` reads tokens and channels-last outputs automatically.
        variant:
            - ``"paper"`` (default): Eq. 19 exactly; where its denominator is exactly zero, alpha
              is zero (a guard, no epsilon); exact bicubic upsampling, clipped at zero.
            - ``"xplique"``: xplique 2.0.2's formula: means instead of both sums, ``1e-4`` added
              to denominators that are exactly zero; TensorFlow's tabulated bicubic weights, not
              clipped; on Keras models xplique's default layer.
            - ``"authors"``: the paper authors' code: alpha divided per channel by its sum over
              the pixels with a positive gradient; upsampled as ``"paper"``.
            - ``"pytorch-grad-cam"``: pytorch-grad-cam 1.5.7's formula, ``1e-6`` added to every
              denominator of Eq. 19; upsampled with linear interpolation (OpenCV's bilinear).
        smooth_samples: Smooth Grad-CAM++ (Omeiza et al. 2019) when ``> 0``: the gradients of
            this many noisy copies of each input are averaged (their first, second and third
            powers) before Eq. 19 is applied to the activations of the input itself (see
            ``formulas.smooth_gradcampp_weights``); each copy costs one more forward and backward
            pass. ``0`` (default): plain Grad-CAM++. ``variant="paper"`` only.
        smooth_noise: the standard deviation of the Gaussian noise, as a fraction of each
            input's range ``max(x) - min(x)`` (SmoothGrad's convention, Smilkov et al. 2017,
            who found 10-20 % to work well); ``0`` gives Grad-CAM++'s maps.
        seed: seeds the noise: sample ``i`` of a call draws its copies, one after the other, from
            ``numpy.random.default_rng(numpy.random.SeedSequence(seed).spawn(N)[i])`` with
            ``standard_normal(shape of one input, dtype=float32)``, so the maps do not depend on
            ``batch_size``; ``None`` draws fresh noise on every call.

    Raises:
        ValueError: as ``GradCAM``, and for ``smooth_samples`` that is not a non-negative
            integer, a ``smooth_noise`` that is negative or not finite, or smoothing with a
            variant other than ``"paper"``.

    Examples:
        >>> maps = GradCAMPP(model).explain(images, labels)  # doctest: +SKIP
        >>> smooth = GradCAMPP(model, smooth_samples=16, seed=0)  # doctest: +SKIP
    """

    _variants = VARIANTS

    def __init__(
        self,
        model: Any,
        output_layer: Any = None,
        batch_size: int = 32,
        operator: Any = None,
        conv_layer: Any = None,
        *,
        variant: Variant = "paper",
        reshape_transform: Callable[[Any], Any] | None = None,
        smooth_samples: int = 0,
        smooth_noise: float = 0.15,
        seed: int | None = None,
    ):
        if (
            isinstance(smooth_samples, bool)
            or not isinstance(smooth_samples, int | np.integer)
            or smooth_samples < 0
        ):
            raise ValueError(
                f"smooth_samples must be a non-negative integer, got {smooth_samples!r}"
            )
        if (
            isinstance(smooth_noise, bool)
            or not isinstance(smooth_noise, int | float | np.floating | np.integer)
            or not np.isfinite(smooth_noise)
            or smooth_noise < 0
        ):
            raise ValueError(
                f"smooth_noise must be a finite number >= 0 (a fraction of each input's range), "
                f"got {smooth_noise!r}"
            )
        if smooth_samples and variant != "paper":
            raise ValueError(
                f"smooth_samples applies to variant='paper' only, got variant={variant!r}"
            )
        super().__init__(
            model,
            output_layer,
            batch_size,
            operator,
            conv_layer,
            variant=variant,
            reshape_transform=reshape_transform,
        )
        self.smooth_samples = int(smooth_samples)
        self.smooth_noise = float(smooth_noise)
        self.seed = seed

    def _weights(self, acts: Any, grads: Any) -> Any:
        return gradcampp_weights(acts, grads, self.variant)

    def _begin(self, n: int) -> list[np.random.Generator] | None:
        """One noise stream per sample, drawn in order whatever the chunks (see ``seed``)."""
        if not self.smooth_samples:
            return None
        return [np.random.default_rng(seed) for seed in np.random.SeedSequence(self.seed).spawn(n)]

    def _chunk_maps(
        self, x: Any, plan: Any, start: int, stop: int, call: Any = None
    ) -> tuple[Any, Any, Any]:
        if not self.smooth_samples:
            return super()._chunk_maps(x, plan, start, stop)
        xp = namespace(x)
        recorder = PlanRecorder(plan)
        acts, _ = self.backend.capture(x, recorder, start, stop)
        fixed = recorder.fixed_plan(start, stop)  # the classes chosen on the clean input
        axes = tuple(range(1, x.ndim))
        spread = xp.max(x, axis=axes, keepdims=True) - xp.min(x, axis=axes, keepdims=True)
        sigma = spread * self.smooth_noise
        shape = tuple(x.shape[1:])
        d1 = d2 = d3 = None
        for _ in range(self.smooth_samples):
            noise = np.stack(
                [rng.standard_normal(shape, dtype=np.float32) for rng in call[start:stop]]
            )
            noisy = x + constant_like(noise, x, xp) * sigma
            _, g = self.backend.capture(noisy, fixed, start, stop)
            g2 = g * g
            if d1 is None:
                d1, d2, d3 = g, g2, g2 * g
            else:
                d1, d2, d3 = d1 + g, d2 + g2, d3 + g2 * g
        count = float(self.smooth_samples)
        d1, d2, d3 = d1 / count, d2 / count, d3 / count  # type: ignore[operator]
        weights = smooth_gradcampp_weights(acts, d1, d2, d3)
        return class_activation_map(acts, weights), acts, d1
