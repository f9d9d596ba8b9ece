"""The explain stage: views -> predictions and maps, on the model's device.

:class:`ExplainStage` holds a loaded model and one explainer per method (an engine keeps one per
process, or per Ray actor, so the model is loaded once); called with a batch of views (``uint8
(H, W, 3)`` arrays, as the read stage gives them) it returns one :class:`ImageExplanation` per
view, or, for a view the model fails on, the reason as text, so that one bad image costs only
itself. It reads and writes no file. What it computes depends only on the views and the run's
``Settings`` (``gradcampp.stages.settings``): the maps at the view's resolution, or at the
explained layer's with ``Settings.layer_resolution``.
"""

from __future__ import annotations

import difflib
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gradcampp
from gradcampp.explainers import GradCAM
from gradcampp.model_specs import LoadedModel, ModelSpecError
from gradcampp.stages.settings import METHODS, Settings
from gradcampp.targets import Classes

_PACKAGE_DIR = Path(gradcampp.__file__).resolve().parent


def first_line(error: BaseException) -> str:
    """``TYPE: first line of the message`` (``TYPE`` alone for an empty message)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def set_threads(threads: int | None) -> None:
    """Limit this process's PyTorch intra-op threads (None: leave them)."""
    if threads is None:
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, int(threads)))


def _layer_names(loaded: LoadedModel) -> list[str]:
    if loaded.framework == "torch":
        return [name for name, _ in loaded.model.named_modules() if name]
    return [layer.name for layer in getattr(loaded.model, "layers", [])]


def check_layer_name(loaded: LoadedModel, layer: str | None) -> None:
    """Raise ModelSpecError naming the nearest layer names when ``layer`` is not in the model."""
    if layer is None:
        return
    names = _layer_names(loaded)
    if not names or layer in names:
        return
    near = difflib.get_close_matches(layer, names, n=5, cutoff=0.6)
    if near:
        hint = "nearest names: " + ", ".join(repr(name) for name in near)
    else:
        top = [name for name in names if "." not in name][:12]
        hint = "no name is close to it; the model's top-level layers are " + ", ".join(
            repr(name) for name in top
        )
        dotted = [name for name in names if "." in name]
        if dotted:
            hint += f" (dotted names reach inner ones, e.g. {dotted[-1]!r})"
    raise ModelSpecError(f"--layer: the model has no layer named {layer!r}; {hint}")


def make_explainers(
    loaded: LoadedModel, methods: Sequence[str], layer: str | None, batch_size: int
) -> dict[str, GradCAM]:
    """One explainer per method; a bad layer name or an unsupported model -> ModelSpecError."""
    check_layer_name(loaded, layer)
    explainers = {}
    for method in methods:
        cls, _ = METHODS[method]
        try:
            explainers[method] = cls(loaded.model, conv_layer=layer, batch_size=batch_size)
        except ValueError as error:
            raise ModelSpecError(str(error).replace("conv_layer", "--layer", 1)) from error
        except TypeError as error:
            raise ModelSpecError(
                f"gradcampp cannot explain this model ({loaded.description}): {error}"
            ) from error
    return explainers


@dataclass
class ImageExplanation:
    """One image's prediction and maps.

    Attributes:
        probs: class probabilities ``(K,)``; order: class indices by decreasing probability.
        explained: the explained class indices ``(T,)``.
        maps: per method, float32 maps ``(T, H, W)`` at the view's resolution.
    """

    probs: np.ndarray
    order: np.ndarray
    explained: np.ndarray
    maps: dict[str, np.ndarray]


def explain_views(
    loaded: LoadedModel,
    explainers: dict[str, GradCAM],
    views: Sequence[np.ndarray],
    target: int | None = None,
    top_k: int | None = None,
    upsample: bool = True,
) -> list[ImageExplanation]:
    """Predict and explain a batch of ``uint8`` views ``(H, W, 3)`` in one pass per method.

    ``upsample=False`` keeps the maps at the explained layer's resolution.

    Raises:
        ModelSpecError: when the target or ``top_k`` does not fit the model's classes, or the
            model does not return class scores.
        Exception: whatever the model or the explainer raises on these inputs.
    """
    pre = loaded.preprocess
    x = np.stack([pre.input(view) for view in views])
    probs = loaded.predict(x)
    n_classes = probs.shape[1]
    if target is not None and target >= n_classes:
        raise ModelSpecError(
            f"--target {target} is out of range: the model has {n_classes} classes"
        )
    if top_k is not None and top_k > n_classes:
        raise ModelSpecError(f"--top-k {top_k} exceeds the model's {n_classes} classes")
    order = np.argsort(-probs, axis=1, kind="stable")
    if target is not None:
        explained = np.full((len(views), 1), target, dtype=np.int64)
    else:
        explained = np.ascontiguousarray(order[:, : top_k or 1])
    maps = {}
    for method, explainer in explainers.items():
        found = np.asarray(
            explainer.explain(x, Classes(explained), upsample=upsample), dtype=np.float32
        )
        if found.ndim == 5 and found.shape[-1] == 1:  # Keras: (N, T, H, W, 1), as xplique
            found = found[..., 0]
        maps[method] = found
    return [
        ImageExplanation(probs[i], order[i], explained[i], {m: maps[m][i] for m in maps})
        for i in range(len(views))
    ]


def _raised_by_gradcampp(error: BaseException) -> bool:
    """Whether ``error`` was raised by gradcampp's own code (not by the model or a library)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    return Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE_DIR)


def explain_views_isolated(
    loaded: LoadedModel,
    explainers: dict[str, GradCAM],
    views: Sequence[np.ndarray],
    target: int | None = None,
    top_k: int | None = None,
    upsample: bool = True,
) -> list[ImageExplanation | str]:
    """``explain_views``, with an image that fails kept apart: its entry is the reason (text).

    The batch is tried whole; if it raises, each image is tried alone, so that one image the
    model fails on costs only that image.

    Raises:
        ModelSpecError: for errors of the model as a whole: a ModelSpecError, or an error of
            gradcampp itself (e.g. no layer with spatial extent) on every image of the batch.
    """
    try:
        return list(explain_views(loaded, explainers, views, target, top_k, upsample))
    except ModelSpecError:
        raise
    except Exception as error:
        if len(views) == 1:
            failures: list[ImageExplanation | str | BaseException] = [error]
        else:
            failures = []
            for view in views:
                try:
                    failures.extend(
                        explain_views(loaded, explainers, [view], target, top_k, upsample)
                    )
                except ModelSpecError:
                    raise
                except Exception as single:
                    failures.append(single)
    errors = [item for item in failures if isinstance(item, BaseException)]
    if len(errors) == len(failures) and all(_raised_by_gradcampp(e) for e in errors):
        message = str(errors[0]).replace("conv_layer", "--layer (or a larger --size)", 1)
        raise ModelSpecError(message) from errors[0]
    if len(errors) == len(failures):
        _check_input_size(loaded, views[0], errors[0])
    return [
        (
            f"the model failed on it ({first_line(item)})"
            if not _raised_by_gradcampp(item)
            else f"cannot explain it ({first_line(item)})"
        )
        if isinstance(item, BaseException)
        else item
        for item in failures
    ]


def _check_input_size(loaded: LoadedModel, view: np.ndarray, error: BaseException) -> None:
    """Raise ModelSpecError when the model fails on a blank input of ``view``'s size with the
    same ``error`` it gave on every image: then the size, not the images, is what it cannot take
    (e.g. ``--size 1`` on a network whose pooling layers need more pixels)."""
    try:
        loaded.predict(loaded.preprocess.input(np.zeros_like(view))[None])
    except ModelSpecError:
        raise
    except Exception as blank:
        if first_line(blank) == first_line(error):
            height, width = view.shape[:2]
            raise ModelSpecError(
                f"the model fails on every input of {height}x{width} pixels, whatever it shows "
                f"({first_line(error)}); the size comes from --size or the model's "
                "preprocessing: give a size the model takes (a larger --size)"
            ) from error


class ExplainStage:
    """A loaded model with its explainers: batches of views in, explanations out.

    Args:
        loaded: the model with its preprocessing and class names.
        settings: what to compute (methods, classes to explain, layer, resolution of the maps).

    Attributes:
        layer: the explained layer's name, known after the first call (None before).

    Raises:
        ModelSpecError: for a bad layer name or a model gradcampp cannot explain.
    """

    def __init__(self, loaded: LoadedModel, settings: Settings):
        self.loaded, self.settings = loaded, settings
        self.explainers = make_explainers(
            loaded, settings.methods, settings.layer, settings.batch_size
        )
        self.layer: str | None = None

    def __call__(self, views: Sequence[np.ndarray]) -> list[ImageExplanation | str]:
        """``explain_views_isolated`` on ``views`` (``uint8 (H, W, 3)`` each) with the run's
        settings (maps ``(T, h, w)`` at the layer's resolution for ``Settings.layer_resolution``,
        else ``(T, H, W)``); a failed image's entry is the reason it failed.

        Raises:
            ModelSpecError: for an error of the model as a whole.
        """
        if not views:
            return []
        s = self.settings
        found = explain_views_isolated(
            self.loaded,
            self.explainers,
            views,
            s.target,
            s.top_k,
            upsample=not s.layer_resolution,
        )
        if self.layer is None:  # PyTorch and Keras alike: the backend resolves the name
            try:
                sample = self.loaded.preprocess.input(views[0])[None]
                backend = self.explainers[s.methods[0]].backend
                self.layer = backend.layer_name(backend.prepare(sample).x)
            except Exception:  # the name is shown for information only
                self.layer = s.layer
        return found


def explanation_columns(
    found: Sequence[ImageExplanation], settings: Settings
) -> dict[str, np.ndarray]:
    """The explanations of a batch of ``N`` images as columns (``gradcampp.ray.ExplainBatch``).

    Returns:
        ``class_index`` int64 and ``probability`` float64, ``(N,)`` (``(N, T)`` with ``top_k``):
        the explained classes; ``top_class_index`` int64 and ``top_probability`` float64
        ``(N, show_top)``; per method, its maps float32 ``(N, h, w)`` (``(N, T, h, w)``).
    """
    explained = np.stack([item.explained for item in found])  # (N, T)
    probs = np.stack([item.probs for item in found])
    order = np.stack([item.order for item in found])
    rows = np.arange(len(found))[:, None]
    probability = probs[rows, explained]
    single = settings.top_k is None
    top = np.ascontiguousarray(order[:, : settings.show_top])
    out: dict[str, Any] = {
        "class_index": explained[:, 0] if single else explained,
        "probability": probability[:, 0] if single else probability,
        "top_class_index": top,
        "top_probability": probs[rows, top],
    }
    for method in settings.methods:
        maps = np.stack([item.maps[method] for item in found])  # (N, T, h, w)
        out[method] = maps[:, 0] if single else maps
    return out
