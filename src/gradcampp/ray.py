"""Grad-CAM++ on Ray: inside your own Ray Data pipelines, or a whole ``gradcampp explain`` job.

- :func:`read_images` and :func:`explain_dataset`: a Ray Data pipeline whose stages each have
  their own resource budget: reading as small CPU tasks, explaining in a pool of actors that each
  hold one model and together never hold every CPU (so reading can never wait for ever on them),
  with paths resolved on the driver.
- :class:`ExplainBatch`: the callable class of that stage, for ``ray.data.Dataset.map_batches``:
  each actor holds one model and its explainers; batches of images come in, the same batches
  with predictions and maps come out.
- :func:`explain_files`: the whole command-line job (read, explain, write ``.npy``/Parquet,
  pictures, ``predictions.csv``, the report) from Python, on a Ray cluster or in this process.

Needs Ray Data (``pip install ".[ray]"`` in a gradcampp checkout).

Example:
    >>> from gradcampp.ray import explain_dataset, read_images
    >>> ds = read_images("images/")  # doctest: +SKIP
    >>> ds = explain_dataset(ds, "torchvision:resnet50", concurrency=4, top_k=3)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp._ray import READ_CPUS, actor_cpus, import_ray
from gradcampp.engines import RunResult, run_job
from gradcampp.recipe import ModelRecipe
from gradcampp.stages.explain import (
    ExplainStage,
    ImageExplanation,
    explanation_columns,
    set_threads,
)
from gradcampp.stages.settings import Settings

__all__ = ["ExplainBatch", "actor_cpus", "explain_dataset", "explain_files", "read_images"]


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
            of ``gradcampp.recipe.ModelRecipe``.

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
        self.explain = ExplainStage(self.loaded, self.settings)
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
        for i, item in enumerate(self.explain(views)):
            if isinstance(item, str):
                raise ValueError(f"image {i} of the batch cannot be explained: {item}")
            found.append(item)
        out.update(explanation_columns(found, self.settings))
        return out


def _absolute(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if "://" in text:  # s3://, gs://, file://...: a location every worker resolves alike
        return text
    return str(Path(text).expanduser().absolute())


def read_images(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    mode: str = "RGB",
    num_cpus: float = READ_CPUS,
    **options: Any,
) -> Any:
    """``ray.data.read_images`` with local paths made absolute here, on the driver.

    Ray Data opens a relative path in each worker's working directory, which on a cluster is not
    the driver's (it is where ``ray start`` ran): ``"images/"`` would be read from another folder,
    or not found. Each reading task reserves ``num_cpus`` CPUs (a quarter by default), its own
    budget beside the model actors' (see :func:`explain_dataset`).

    Args:
        paths: image files and/or folders (local or URLs such as ``s3://...``, left as given).
        mode: the Pillow mode of the images (``"RGB"``: ``uint8 (H, W, 3)``).
        num_cpus: CPUs reserved by each reading task.
        **options: other arguments of ``ray.data.read_images`` (``size``, ``include_paths``...).

    Returns:
        a ``ray.data.Dataset`` with an ``image`` column.
    """
    ray = import_ray()
    given = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    return ray.data.read_images(
        [_absolute(p) for p in given], mode=mode, num_cpus=num_cpus, **options
    )


def explain_dataset(
    dataset: Any,
    model: str | Callable[[], Any],
    *,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    batch_size: int = 32,
    **options: Any,
) -> Any:
    """``dataset.map_batches(ExplainBatch, ...)`` in a pool of actors with a budget of their own.

    With ``concurrency`` actors of one CPU each on a cluster of ``concurrency`` CPUs, the actors
    would hold every CPU and the tasks reading the images would wait for ever (Ray Data reports
    them as backpressured, and the run hangs without an error). Here each actor reserves
    ``actor_cpus(cluster CPUs, concurrency)``, so the actors together leave at least one CPU (half
    of a one- or two-CPU cluster) to the other stages.

    Args:
        dataset: a ``ray.data.Dataset`` with an image column (e.g. from :func:`read_images`).
        model: as for :class:`ExplainBatch`.
        concurrency: the actors, each holding one model.
        num_gpus: GPUs each actor reserves (then give ``device="cuda"``).
        batch_size: images per batch handed to an actor.
        **options: the other arguments of :class:`ExplainBatch` (``methods``, ``top_k``,
            ``device``, ``threads``, ...).

    Returns:
        the dataset with ExplainBatch's columns added (lazy, as every Ray Data dataset).
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init()
    cpus = actor_cpus(float(ray.cluster_resources().get("CPU", 0.0)), concurrency)
    options.setdefault("threads", 1)  # one thread per actor unless asked: actors share cores
    remote: dict[str, Any] = {"num_cpus": cpus}
    if num_gpus > 0:
        remote["num_gpus"] = num_gpus
    return dataset.map_batches(
        ExplainBatch,
        fn_constructor_kwargs={"model": model, **options},
        concurrency=concurrency,
        batch_size=batch_size,
        **remote,
    )


def explain_files(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    model: str | Callable[[], Any],
    *,
    engine: str = "ray",
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    stages: str = "auto",
    methods: Sequence[str] = ("gradcampp",),
    target: int | None = None,
    top_k: int | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    cmap: str = "inferno",
    alpha: float = 0.5,
    overlays: bool = True,
    pictures: str = "jpeg",
    format: str = "files",
    full_size: bool = False,
    map_dtype: str = "float16",
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
        address, workers, gpus_per_worker, stages: as ``--address``, ``--workers``,
            ``--gpus-per-worker``, ``--ray-stages`` (Ray only; ``stages="auto"``: split when
            ``gpus_per_worker > 0``, fused otherwise).
        methods, target, top_k, layer, batch_size, cmap, alpha: as the command line's options.
        overlays: False as ``--no-overlays``; pictures, format, full_size, resume,
            report_sample, map_dtype: as ``--pictures``, ``--format``, ``--full-size``,
            ``--resume``, ``--report-sample``, ``--map-dtype``.
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
        pictures=pictures,
        format=format,
        full_size=full_size,
        map_dtype=map_dtype,
    )
    recipe = ModelRecipe(model, device=device, **model_options)
    ray_options: dict[str, Any] = {}
    if engine == "ray":
        ray_options = {
            "address": address,
            "workers": workers,
            "gpus_per_worker": gpus_per_worker,
            "stages": stages,
        }
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
