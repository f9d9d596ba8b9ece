"""Grad-CAM++ on Ray: inside your own Ray Data pipelines, or a whole ``gradcampp explain`` job.

- :class:`ExplainBatch`: a callable class for ``ray.data.Dataset.map_batches``: each actor holds
  one model and its explainers; batches of images come in, the same batches with predictions
  and maps come out.
- :func:`explain_files`: the whole command-line job (read, explain, write ``.npy``/Parquet,
  pictures, ``predictions.csv``, the report) from Python, on a Ray cluster or in this process.

Needs Ray Data (``pip install ".[ray]"`` in a gradcampp checkout).

Example:
    >>> import ray
    >>> from gradcampp.ray import ExplainBatch
    >>> ds = ray.data.read_images("images/", mode="RGB")  # doctest: +SKIP
    >>> ds = ds.map_batches(  # doctest: +SKIP
    ...     ExplainBatch,
    ...     fn_constructor_kwargs={"model": "torchvision:resnet50", "top_k": 3},
    ...     compute=ray.data.ActorPoolStrategy(size=4),
    ...     batch_size=32,
    ... )
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp.engines import run_job
from gradcampp.engines.ray_engine import set_threads
from gradcampp.engines.recipe import ModelRecipe
from gradcampp.engines.work import ImageWork, Settings
from gradcampp.pipeline import ImageExplanation, RunResult

__all__ = ["ExplainBatch", "explain_files"]


def _rgb(image: Any) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(
            f"images must be uint8 (H, W, 3) arrays as ray.data.read_images gives, got dtype "
            f"{array.dtype} and shape {array.shape}"
        )
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]


class ExplainBatch:
    """Explain batches of images in ``ray.data.Dataset.map_batches`` (one model per actor).

    Each image (any size: it is preprocessed as ``gradcampp explain`` does, to the model's input
    size) gets its predictions and one map per method; every input column is passed through.

    Args:
        model: a model spec as ``gradcampp explain --model`` takes it, or a function without
            arguments returning a ``torch.nn.Module``, a Keras model or a ``LoadedModel``.
        methods: ``"gradcampp"`` and/or ``"gradcam"``; each adds a column of that name.
        target: explain this class index for every image; ``top_k``: the ``k`` most probable
            classes of each image; neither: the most probable class.
        layer: the explained layer's name (None: the last layer with spatial extent).
        image_column: the column holding the images: ``uint8`` arrays ``(H, W, 3)`` (also
            ``(H, W)`` grey or ``(H, W, 4)``, whose alpha is dropped), as a ``(N, H, W, 3)`` array
            or a column of differently sized images.
        upsample: maps at the model input's resolution (True) or at the layer's (False).
        show_top: how many top classes the ``top_class_index``/``top_probability`` columns hold.
        batch_size: images per forward pass inside a batch.
        device: torch device of the model (``"cpu"``, ``"cuda"``, ``"auto"``).
        threads: PyTorch threads of the actor (None: leave Ray's default).
        **model_options: ``weights``, ``allow_pickle``, ``classes``, ``size``, ``mean``, ``std``
            of ``gradcampp.engines.recipe.ModelRecipe``.

    Output columns (``N`` rows, ``T`` explained classes with ``top_k``):
        ``class_index`` int64 ``(N,)`` or ``(N, T)``: the explained classes;
        ``probability`` float64, same shape: their probabilities;
        ``top_class_index`` int64 ``(N, show_top)`` and ``top_probability`` float64;
        ``<method>`` float32 ``(N, H, W)`` or ``(N, T, H, W)``: the maps.
    """

    def __init__(
        self,
        model: str | Callable[[], Any],
        *,
        methods: Sequence[str] = ("gradcampp",),
        target: int | None = None,
        top_k: int | None = None,
        layer: str | None = None,
        image_column: str = "image",
        upsample: bool = True,
        show_top: int = 5,
        batch_size: int = 32,
        device: str = "cpu",
        threads: int | None = None,
        **model_options: Any,
    ):
        set_threads(threads)
        self.settings = Settings(
            methods=tuple(methods),
            target=target,
            top_k=top_k,
            layer=layer,
            batch_size=batch_size,
            show_top=show_top,
            overlays=False,
            format="parquet",
            full_size=upsample,  # maps upsampled by the explainer itself, or at the layer's size
        )
        self.loaded = ModelRecipe(model, device=device, **model_options).load()
        self.work = ImageWork(self.loaded, self.settings)
        self.image_column = image_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch``: a dict of columns (``batch_format="numpy"``, Ray Data's default).

        Raises:
            ValueError: when the image column is missing or an image cannot be explained.
            TypeError: for images that are not ``uint8``.
        """
        if self.image_column not in batch:
            raise ValueError(
                f"the batch has no column {self.image_column!r} (columns: {sorted(batch)}); "
                "set image_column"
            )
        pre = self.loaded.preprocess
        views = [pre.view(_rgb(image)) for image in batch[self.image_column]]
        out = dict(batch)
        if not views:
            return out
        found: list[ImageExplanation] = []
        for i, item in enumerate(self.work.explain(views)):
            if isinstance(item, str):
                raise ValueError(f"image {i} of the batch cannot be explained: {item}")
            found.append(item)
        explained = np.stack([item.explained for item in found])  # (N, T)
        probs = np.stack([item.probs for item in found])
        order = np.stack([item.order for item in found])
        rows = np.arange(len(views))[:, None]
        probability = probs[rows, explained]
        single = self.settings.top_k is None
        out["class_index"] = explained[:, 0] if single else explained
        out["probability"] = probability[:, 0] if single else probability
        out["top_class_index"] = np.ascontiguousarray(order[:, : self.settings.show_top])
        out["top_probability"] = probs[rows, out["top_class_index"]]
        for method in self.settings.methods:
            maps = np.stack([item.maps[method] for item in found])  # (N, T, h, w)
            out[method] = maps[:, 0] if single else maps
        return out


def explain_files(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    model: str | Callable[[], Any],
    *,
    engine: str = "ray",
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    methods: Sequence[str] = ("gradcampp",),
    target: int | None = None,
    top_k: int | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    cmap: str = "inferno",
    alpha: float = 0.5,
    overlays: bool = True,
    format: str = "files",
    full_size: bool = False,
    resume: bool = False,
    report_sample: int | None = None,
    progress: bool = True,
    device: str = "cpu",
    **model_options: Any,
) -> RunResult:
    """Run ``gradcampp explain`` from Python: the same files, by default on Ray.

    Args:
        inputs: image files and/or directories (searched as the command line does).
        out: the output directory.
        model: a model spec (``"demo"``, ``"torchvision:resnet50"``, ``"pkg.mod:make"``, a
            file) or a function without arguments returning the model (see ``ExplainBatch``).
        engine: ``"ray"`` or ``"local"``.
        address, workers, gpus_per_worker: as ``--address``, ``--workers``,
            ``--gpus-per-worker`` (Ray only).
        methods, target, top_k, layer, batch_size, cmap, alpha: as the command line's options.
        overlays: False as ``--no-overlays``; format, full_size, resume, report_sample: as
            ``--format``, ``--full-size``, ``--resume``, ``--report-sample``.
        progress: show the progress bar.
        device: the torch device of the model.
        **model_options: ``weights``, ``allow_pickle``, ``classes``, ``size``, ``mean``, ``std``.

    Returns:
        the run's records, skipped inputs and report path.

    Raises:
        ModelSpecError: for a model that cannot be loaded or explained.
        ValueError: for options that do not fit, or no image found in ``inputs``.
    """
    from gradcampp.images import find_images

    out_dir = Path(out)
    paths = find_images(inputs, exclude=out_dir)
    if not paths:
        raise ValueError(f"no image found in {[str(p) for p in inputs]}")
    settings = Settings(
        methods=tuple(methods),
        target=target,
        top_k=top_k,
        layer=layer,
        batch_size=batch_size,
        cmap=cmap,
        alpha=alpha,
        overlays=overlays,
        format=format,
        full_size=full_size,
    )
    recipe = ModelRecipe(model, device=device, **model_options)
    ray_options: dict[str, Any] = {}
    if engine == "ray":
        ray_options = {"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker}
    return run_job(
        recipe,
        paths,
        out_dir,
        settings,
        engine=engine,
        resume=resume,
        report_sample=report_sample,
        progress=progress,
        **ray_options,
    )
