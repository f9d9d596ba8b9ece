"""The Ray engine: explain a run's images on a Ray cluster, one model per actor.

The run is a Ray Data pipeline: a dataset of image groups (``batch_size`` images each, formed
once on the driver, so a group is the same whenever it is retried) flows through
``map_batches`` into a fixed pool of actors (:class:`FileWorker`), each of which loads the
model once and then reads, explains and writes its groups; only small records (the content of
``NAME.json``) come back to the driver, which shows the progress and finally writes
``predictions.csv`` and the report. Memory is bounded by the groups in flight, not by the data
set. Ray restarts an actor that dies and retries its group on the new one (Ray Data's defaults
for actors: ``max_restarts=-1``, ``max_task_retries=-1``); since every file of a group has a
fixed name and is renamed into place when complete, a retried group rewrites the same files and
nothing is written twice.

Every worker writes into the output directory itself: on a cluster of several machines it must
be a path that all of them see (a shared file system), as must the inputs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp.engines.outputs import finish_run, plan_run
from gradcampp.engines.parquet import part_path
from gradcampp.engines.recipe import ModelRecipe
from gradcampp.engines.work import ImageWork, Settings
from gradcampp.images import ImageReadError, read_view
from gradcampp.model_specs import LoadedModel, ModelSpecError
from gradcampp.outputs import display_path
from gradcampp.pipeline import RunResult, progress_bar


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError(
            f'--engine ray needs Ray Data: pip install ".[ray]" in a gradcampp checkout ({error})'
        ) from error
    return ray


def set_threads(threads: int | None) -> None:
    """Limit this process's PyTorch intra-op threads (None: leave them)."""
    if threads is None:
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, int(threads)))


class FileWorker:
    """One Ray actor of a run: loads the model once, then reads, explains and writes groups.

    Called by ``map_batches`` with rows ``{group, indices, files, names}`` (one row per
    group of images); returns one row per image: ``index`` (its position in the run's inputs),
    ``status`` (``"done"`` or ``"skipped"``) and ``payload`` (the record as JSON, or the reason
    the image was skipped); and a row ``(-1, "note", text)`` per remark on an input (e.g. how
    a float image was scaled).

    Args:
        recipe: how to load the model.
        settings: what to compute and write.
        out_dir: the output directory (absolute).
        run_id: names the run's Parquet part files.
        threads: PyTorch threads of this actor (None: Ray's default, its CPU share).
        search_path: a directory put first on ``sys.path`` (the driver's working directory, so
            that ``package.module:callable`` specs resolve as on the driver).
    """

    def __init__(
        self,
        recipe: ModelRecipe,
        settings: Settings,
        out_dir: str,
        run_id: str,
        threads: int | None = None,
        search_path: str | None = None,
    ):
        if search_path and os.path.isdir(search_path) and search_path not in sys.path:
            sys.path.insert(0, search_path)
        set_threads(threads)
        self.loaded = recipe.load()
        self.work = ImageWork(self.loaded, settings)
        self.settings, self.out_dir, self.run_id = settings, Path(out_dir), run_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain and write every group in ``batch``; one output row per image."""
        index, status, payload = [], [], []
        remarks: list[str] = []
        for group, indices, files, names in zip(
            batch["group"],
            batch["indices"],
            batch["files"],
            batch["names"],
            strict=True,
        ):
            good = []
            position = {}
            for i, file, name in zip(indices, files, names, strict=True):
                position[display_path(file)] = int(i)
                try:
                    view = read_view(file, self.loaded.preprocess, notes=remarks)
                except ImageReadError as error:
                    index.append(int(i))
                    status.append("skipped")
                    payload.append(error.reason)
                    continue
                good.append((Path(file), str(name), view))  # absolute: as on the driver
            part = None
            if self.settings.format == "parquet":
                part = part_path(self.out_dir, self.run_id, int(group))
            done = self.work.run(good, self.out_dir, part)
            by_name = {str(name): int(i) for i, name in zip(indices, names, strict=True)}
            for record in done.records:
                index.append(by_name[record["name"]])
                status.append("done")
                payload.append(json.dumps(record, ensure_ascii=False))
            for shown, reason in done.skipped:
                index.append(position[shown])
                status.append("skipped")
                payload.append(reason)
        for remark in remarks:
            index.append(-1)
            status.append("note")
            payload.append(remark)
        return {
            "index": np.asarray(index, dtype=np.int64),
            "status": np.asarray(status, dtype=object),
            "payload": np.asarray(payload, dtype=object),
        }


def _groups(plan: Any, batch_size: int) -> list[dict[str, Any]]:
    groups = []
    for number, start in enumerate(range(0, len(plan.todo), batch_size)):
        chunk = plan.todo[start : start + batch_size]
        groups.append(
            {
                "group": number,
                "indices": list(chunk),
                "files": [str(plan.paths[i].absolute()) for i in chunk],
                "names": [plan.names[i] for i in chunk],
            }
        )
    return groups


@contextmanager
def connect(address: str | None, num_cpus: int | None) -> Iterator[Any]:
    """Ray, connected: to ``address``, or to a local instance started here (with ``num_cpus``
    CPUs) and stopped on exit; a connection that this process already has is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address is None:
        ray.init(num_cpus=num_cpus, **options)
    else:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise ConnectionError(f"cannot join the Ray cluster at {address}: {error}") from error
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data without its own progress bars and execution logs (the run shows its own)."""
    context = ray.data.DataContext.get_current()
    saved = {
        name: getattr(context, name)
        for name in ("enable_progress_bars", "print_on_execution_start", "enable_auto_log_stats")
        if hasattr(context, name)
    }
    logger = logging.getLogger("ray.data")
    level = logger.level
    for name in saved:
        setattr(context, name, False)
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        logger.setLevel(level)


def _model_error(error: BaseException) -> ModelSpecError | None:
    """The ModelSpecError a worker raised, found in the exceptions Ray wraps it in."""
    seen = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ModelSpecError):
            return current
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    text = str(error)
    marker = "ModelSpecError: "
    if marker in text:  # the worker's exception, seen only as text
        return ModelSpecError(text.split(marker)[-1].strip().splitlines()[0])
    return None


def run_ray(
    recipe: ModelRecipe,
    paths: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    threads_per_worker: int | None = None,
    resume: bool = False,
    report_sample: int | None = None,
    title: str = "Grad-CAM++ explanations",
    progress: bool = True,
    loaded: LoadedModel | None = None,
) -> RunResult:
    """Explain ``paths`` on a Ray cluster and write the same files as the local engine.

    Args:
        recipe: how to load the model (on the driver to check it, then once per worker).
        paths: the inputs, in order; unreadable ones are skipped and listed in the result.
        out_dir: the output directory, seen by every worker.
        settings: what to compute and write.
        address: the cluster to join (``ray.init(address=...)``: ``"auto"``, ``"HOST:PORT"``,
            ``"ray://HOST:10001"``); None starts a local Ray for the run (with ``workers`` CPUs)
            and stops it at the end. A connection this process already has is used as it is.
        workers: actors, each holding one model; None: as many as the cluster's CPUs (or GPUs,
            with ``gpus_per_worker``) allow.
        gpus_per_worker: GPUs each actor reserves (fractions share a GPU); the model then
            goes to ``cuda`` when the recipe's device is ``"cpu"``.
        cpus_per_worker: CPUs each actor reserves.
        threads_per_worker: PyTorch threads per actor (None: ``cpus_per_worker``).
        resume: explain only what a previous run into ``out_dir`` left undone.
        report_sample: keep the report to this many images (None: all).
        title: the report's title.
        progress: show a progress bar (images done, images/s) on stderr.
        loaded: the model already loaded on the driver, if the caller has it.

    Raises:
        ModelSpecError: a model that cannot be loaded or explained, here or on a worker.
        ValueError: ``resume`` into a run with other settings.
        ConnectionError: ``address`` cannot be reached.
        ImportError: Ray Data is not installed.
    """
    import_ray()
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise ValueError(
            f"gpus_per_worker must be >= 0 and cpus_per_worker > 0, got {gpus_per_worker} and "
            f"{cpus_per_worker}"
        )
    if loaded is None:
        loaded = recipe.load(device="cpu")
    ImageWork(loaded, settings)  # a bad layer or an unsupported model fails here, not on a worker
    out_dir = Path(out_dir).absolute()
    plan = plan_run(loaded, paths, out_dir, settings, resume)
    records: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    remarks: list[str] = []
    if plan.todo:
        worker_recipe = recipe
        if gpus_per_worker > 0 and recipe.device == "cpu":
            from dataclasses import replace

            worker_recipe = replace(recipe, device="cuda")
        local_cpus = None
        if address is None and workers is not None:
            local_cpus = max(1, int(np.ceil(workers * cpus_per_worker)))
        with connect(address, local_cpus) as ray, _quiet_ray_data(ray):
            if workers is None:
                resources = ray.cluster_resources()
                if gpus_per_worker > 0:
                    workers = int(resources.get("GPU", 0) // gpus_per_worker)
                else:
                    workers = int(resources.get("CPU", 1) // cpus_per_worker)
                if workers < 1:
                    raise ValueError(
                        f"the Ray cluster has no room for one worker ({resources}); "
                        "give --workers or fewer --gpus-per-worker"
                    )
            groups = _groups(plan, settings.batch_size)
            threads = threads_per_worker or max(1, int(cpus_per_worker))
            dataset = ray.data.from_items(groups, override_num_blocks=len(groups))
            remote: dict[str, Any] = {"num_cpus": cpus_per_worker}
            if gpus_per_worker > 0:
                remote["num_gpus"] = gpus_per_worker
            dataset = dataset.map_batches(
                FileWorker,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(workers, len(groups))),
                fn_constructor_kwargs={
                    "recipe": worker_recipe,
                    "settings": settings,
                    "out_dir": str(out_dir),
                    "run_id": plan.run_id,
                    "threads": threads,
                    "search_path": os.getcwd(),
                },
                **remote,
            )
            bar = progress_bar(len(plan.todo), progress and len(plan.todo) > 3)
            try:
                for row in dataset.iter_rows():
                    index = int(row["index"])
                    if row["status"] == "note":
                        remarks.append(str(row["payload"]))
                        continue
                    if row["status"] == "done":
                        records.append(json.loads(row["payload"]))
                    else:
                        skipped.append((display_path(plan.paths[index]), str(row["payload"])))
                    bar.update(1)
            except Exception as error:
                found = _model_error(error)
                if found is not None:
                    raise ModelSpecError(str(found)) from error
                raise
            finally:
                bar.close()
    result = finish_run(
        plan,
        out_dir,
        loaded,
        settings,
        records,
        skipped,
        title=title,
        report_sample=report_sample,
    )
    result.notes.extend(dict.fromkeys(remarks))  # a remark repeated by a retried group, once
    return result
