"""The three stages of a Ray run as Ray Data stages, with plain data between them.

A run's dataset has one row per group of images (``group``: its number, which names its Parquet
part file; ``indices``: the images' positions in the run's inputs; ``files``: absolute paths;
``names``: unique result names). Each stage adds columns to the row:

- *read* (:func:`read_stage`, CPU tasks; needs the model's preprocessing only): ``views``, the
  read images' views ``uint8 (n, H, W, 3)``; ``read``, their names; ``unread``, ``[shown path,
  reason]`` of each unreadable input; ``notes``, remarks on the inputs;
- *explain* (:class:`ExplainStage` of :mod:`gradcampp.stages.explain` in actors that hold the
  model, :class:`ExplainActor`; the only stage given GPUs): per view its class probabilities
  ``probs`` float64 ``(n, K)``, ``order`` int64 ``(n, K)``, ``explained`` int64 ``(n, T)``,
  ``maps`` (per method float32 ``(n, T, h, w)``), ``failed`` (the reason a view could not be
  explained, ``""`` when it was) and ``layer`` (the explained layer's name);
- *write* (:func:`write_stage`, CPU tasks): the files of each image, atomically; its output is one
  row per image: ``index`` (its position in the run's inputs), ``status`` (``"done"`` or
  ``"skipped"``) and ``payload`` (the record as JSON, or the reason the image was skipped), a row
  ``(-1, "note", text)`` per remark, and ``(-1, "error", "TYPE: message")`` for an error of the
  model as a whole or any other exception, which ends the run on the driver.

Every stage catches the exceptions of its code and carries them in the row's ``error`` column, so
a Ray task or actor call fails only when its process dies.

A run lays the stages out in one of two ways (``gradcampp._ray.choose_layout``):

- ``"split"``: read and write as CPU tasks, explain in a pool of actors (GPU or CPU), so decoding
  and encoding run on CPUs beside a GPU that explains;
- ``"fused"``: one pool of actors (:class:`FusedActor`), each of which runs the same three
  functions one after the other on its group, in its own process: no views or maps cross the
  object store and no reading or writing process competes with the model for the cores, which
  is what pays on CPUs alone.

``"auto"`` (the default) is ``"split"`` when each actor reserves GPUs and ``"fused"`` otherwise.
:func:`stage_plan` says which stage runs how, with which resources; :func:`build_dataset` turns
that plan into Ray Data ``map_batches`` calls.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp.model_specs import LoadedModel
from gradcampp.outputs import display_path
from gradcampp.parquet import part_path
from gradcampp.recipe import ModelRecipe
from gradcampp.stages.explain import ExplainStage, ImageExplanation, first_line, set_threads
from gradcampp.stages.read import read_group
from gradcampp.stages.settings import Settings
from gradcampp.stages.write import write_group

GROUP_COLUMNS = ("group", "indices", "files", "names")


def cells(values: Sequence[Any]) -> np.ndarray:
    """A column of Python objects (lists, dicts, arrays of any shape), one per row."""
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value
    return column


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error)}"


def read_stage(batch: dict[str, np.ndarray], *, preprocess: Any) -> dict[str, np.ndarray]:
    """Read each group of ``batch`` (``gradcampp.stages.read.read_group``); adds ``views``,
    ``read``, ``unread``, ``notes`` and ``error`` (module docstring)."""
    views, read, unread, notes, errors = [], [], [], [], []
    for files, names in zip(batch["files"], batch["names"], strict=True):
        remarks: list[str] = []
        items = [(Path(str(f)), str(n)) for f, n in zip(files, names, strict=True)]
        try:
            found, skipped = read_group(items, preprocess, remarks)
            error = ""
        except Exception as caught:  # carried to the driver, which ends the run with it
            found, skipped, error = [], [], _error_text(caught)
        stacked = (
            np.stack([view for _, _, view in found])
            if found
            else np.zeros((0, 1, 1, 3), dtype=np.uint8)
        )
        views.append(stacked)
        read.append([name for _, name, _ in found])
        unread.append([list(pair) for pair in skipped])
        notes.append(remarks)
        errors.append(error)
    out = {key: batch[key] for key in GROUP_COLUMNS}
    out.update(
        views=cells(views),
        read=cells(read),
        unread=cells(unread),
        notes=cells(notes),
        error=cells(errors),
    )
    return out


def pack_explanations(found: Sequence[ImageExplanation | str]) -> dict[str, Any]:
    """The explain stage's results for ``n`` views as arrays (module docstring); a view that
    failed has zeros in every array and its reason in ``failed``."""
    done = [item for item in found if not isinstance(item, str)]
    n = len(found)
    if not done:
        empty = np.zeros((n, 0))
        return {
            "probs": empty,
            "order": empty.astype(np.int64),
            "explained": empty.astype(np.int64),
            "maps": {},
            "failed": [str(item) for item in found],
        }
    first = done[0]
    probs = np.zeros((n, *first.probs.shape), dtype=np.float64)
    order = np.zeros((n, *first.order.shape), dtype=np.int64)
    explained = np.zeros((n, *first.explained.shape), dtype=np.int64)
    maps = {m: np.zeros((n, *a.shape), dtype=np.float32) for m, a in first.maps.items()}
    failed = []
    for i, item in enumerate(found):
        if isinstance(item, str):
            failed.append(item)
            continue
        failed.append("")
        probs[i], order[i], explained[i] = item.probs, item.order, item.explained
        for method, array in item.maps.items():
            maps[method][i] = array
    return {"probs": probs, "order": order, "explained": explained, "maps": maps, "failed": failed}


def unpack_explanations(packed: dict[str, Any]) -> list[ImageExplanation | str]:
    """The inverse of :func:`pack_explanations`."""
    out: list[ImageExplanation | str] = []
    for i, reason in enumerate(packed["failed"]):
        if reason:
            out.append(str(reason))
            continue
        maps = {m: np.asarray(a[i], dtype=np.float32) for m, a in packed["maps"].items()}
        out.append(
            ImageExplanation(
                np.asarray(packed["probs"][i]),
                np.asarray(packed["order"][i]),
                np.asarray(packed["explained"][i]),
                maps,
            )
        )
    return out


class ExplainActor:
    """The explain stage in a Ray actor: loads the model once, then explains groups of views.

    Args:
        recipe: how to load the model.
        settings: what to compute.
        threads: PyTorch threads of this actor (None: Ray's default).
        search_path: a directory put first on ``sys.path`` (the driver's working directory, so
            that ``package.module:callable`` specs resolve as on the driver).
    """

    def __init__(
        self,
        recipe: ModelRecipe,
        settings: Settings,
        threads: int | None = None,
        search_path: str | None = None,
    ):
        if search_path and os.path.isdir(search_path) and search_path not in sys.path:
            sys.path.insert(0, search_path)
        set_threads(threads)
        self.loaded = recipe.load()
        self.explain = ExplainStage(self.loaded, settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain each group's views; adds ``probs``, ``order``, ``explained``, ``maps``,
        ``failed`` and ``layer``, and an explanation's error to ``error``."""
        packed, layers, errors = [], [], []
        for views, error in zip(batch["views"], batch["error"], strict=True):
            found: list[ImageExplanation | str] = []
            if not error:
                try:
                    found = self.explain(list(np.asarray(views)))
                except Exception as caught:  # carried to the driver, which ends the run
                    error = _error_text(caught)
            packed.append(pack_explanations(found))
            layers.append(self.explain.layer)
            errors.append(str(error))
        out = dict(batch)
        for key in ("probs", "order", "explained", "maps", "failed"):
            out[key] = cells([item[key] for item in packed])
        out["layer"] = cells(layers)
        out["error"] = cells(errors)
        return out


def write_stage(
    batch: dict[str, np.ndarray],
    *,
    loaded: LoadedModel,
    settings: Settings,
    out_dir: str,
    run_id: str,
) -> dict[str, np.ndarray]:
    """Write each group's files (``gradcampp.stages.write.write_group``); one output row per
    image, note and error (module docstring).

    ``loaded`` needs no model here: its class names and description go into the records.
    """
    index: list[int] = []
    status: list[str] = []
    payload: list[str] = []
    folder = Path(out_dir)
    for row in range(len(batch["group"])):
        indices = [int(i) for i in batch["indices"][row]]
        files = [str(f) for f in batch["files"][row]]
        names = [str(n) for n in batch["names"][row]]
        for remark in batch["notes"][row]:
            index.append(-1)
            status.append("note")
            payload.append(str(remark))
        error = str(batch["error"][row])
        if not error:
            by_name = dict(zip(names, zip(indices, files, strict=True), strict=True))
            views = [
                (Path(by_name[str(name)][1]), str(name), np.asarray(view))
                for name, view in zip(batch["read"][row], batch["views"][row], strict=True)
            ]
            packed = {
                key: batch[key][row] for key in ("probs", "order", "explained", "maps", "failed")
            }
            part = None
            if settings.format == "parquet":
                part = part_path(folder, run_id, int(batch["group"][row]))
            try:
                done = write_group(
                    views,
                    unpack_explanations(packed),
                    folder,
                    settings,
                    loaded=loaded,
                    layer=batch["layer"][row],
                    part=part,
                )
            except Exception as caught:  # carried to the driver, which ends the run
                error = _error_text(caught)
        if error:
            index.append(-1)
            status.append("error")
            payload.append(error)
            break
        position = {display_path(f): i for i, f in zip(indices, files, strict=True)}
        for record in done.records:
            index.append(by_name[record["name"]][0])
            status.append("done")
            payload.append(json.dumps(record, ensure_ascii=False))
        for shown, reason in [*batch["unread"][row], *done.skipped]:
            index.append(position[str(shown)])
            status.append("skipped")
            payload.append(str(reason))
    return {
        "index": np.asarray(index, dtype=np.int64),
        "status": np.asarray(status, dtype=object),
        "payload": np.asarray(payload, dtype=object),
    }


class FusedActor:
    """The three stages in one Ray actor (the ``"fused"`` layout): loads the model once, then runs
    :func:`read_stage`, :meth:`ExplainActor.__call__` and :func:`write_stage` on each batch of
    groups, in its own process; its output rows are :func:`write_stage`'s.

    Args:
        recipe, settings, threads, search_path: as :class:`ExplainActor`.
        out_dir, run_id: as :func:`write_stage`.
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
        self.explain = ExplainActor(recipe, settings, threads, search_path)
        self.settings, self.out_dir, self.run_id = settings, out_dir, run_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Read, explain and write every group of ``batch``; one output row per image, note and
        error."""
        loaded = self.explain.loaded
        return write_stage(
            self.explain(read_stage(batch, preprocess=loaded.preprocess)),
            loaded=loaded,
            settings=self.settings,
            out_dir=self.out_dir,
            run_id=self.run_id,
        )


@dataclass(frozen=True)
class RayStage:
    """One stage of a Ray run: what runs, and how Ray runs it.

    Attributes:
        name: ``"read"``, ``"explain"`` or ``"write"`` (split), ``"fused"`` (all three).
        fn: the function (tasks) or class (actors) given to ``map_batches``.
        compute: ``"tasks"`` (stateless CPU tasks) or ``"actors"`` (a fixed pool of actors).
        resources: what each task or actor reserves (``{"num_cpus": ..., "num_gpus": ...}``).
        kwargs: the function's keyword arguments (tasks) or the class's constructor's (actors).
    """

    name: str
    fn: Any
    compute: str
    resources: dict[str, float]
    kwargs: dict[str, Any] = field(default_factory=dict)


def stage_plan(
    loaded: LoadedModel,
    recipe: ModelRecipe,
    settings: Settings,
    out_dir: Path,
    run_id: str,
    *,
    actor_cpus: float,
    task_cpus: float,
    gpus_per_worker: float = 0.0,
    threads: int | None = None,
    search_path: str | None = None,
    layout: str = "split",
) -> list[RayStage]:
    """The run's stages in ``layout`` (``"split"`` or ``"fused"``, see :func:`choose_layout`).

    ``"split"``: three stages, read and write as CPU tasks of ``task_cpus`` CPUs each, explain as
    actors of ``actor_cpus`` CPUs (and ``gpus_per_worker`` GPUs when above 0) that load the model
    from ``recipe``. ``loaded`` (the driver's) gives the read tasks the preprocessing and the
    write tasks the class names and description; its model is not sent.

    ``"fused"``: one stage, actors of ``actor_cpus`` CPUs (and ``gpus_per_worker`` GPUs) that
    load the model and read, explain and write their groups (:class:`FusedActor`);
    ``task_cpus`` is not used.

    Raises:
        ValueError: for another ``layout``.
    """
    actor_resources = {"num_cpus": actor_cpus}
    if gpus_per_worker > 0:
        actor_resources["num_gpus"] = gpus_per_worker
    model_kwargs = {
        "recipe": recipe,
        "settings": settings,
        "threads": threads,
        "search_path": search_path,
    }
    if layout == "fused":
        kwargs = {**model_kwargs, "out_dir": str(out_dir), "run_id": run_id}
        return [RayStage("fused", FusedActor, "actors", actor_resources, kwargs)]
    if layout != "split":
        raise ValueError(f"layout must be 'split' or 'fused', got {layout!r}")
    return [
        RayStage(
            "read", read_stage, "tasks", {"num_cpus": task_cpus}, {"preprocess": loaded.preprocess}
        ),
        RayStage("explain", ExplainActor, "actors", actor_resources, model_kwargs),
        RayStage(
            "write",
            write_stage,
            "tasks",
            {"num_cpus": task_cpus},
            {
                "loaded": replace(loaded, model=None, warnings=[]),
                "settings": settings,
                "out_dir": str(out_dir),
                "run_id": run_id,
            },
        ),
    ]


def build_dataset(
    ray: Any,
    groups: list[dict[str, Any]],
    stages: Sequence[RayStage],
    workers: int,
    retries: int,
    in_flight: int | None = None,
) -> Any:
    """The Ray Data dataset of a run: ``groups`` (one row each) through ``stages``.

    Tasks are retried ``retries`` times when their process dies (``max_retries``); actors are
    restarted when theirs dies (``max_restarts=-1``: they only reload the model) and their call
    tried again, at most ``retries`` times. A pool of ``min(workers, len(groups))`` actors, each
    holding ``in_flight`` calls at a time (None: Ray Data's default; every call an actor holds
    fails when its process dies).
    """
    dataset = ray.data.from_items(groups, override_num_blocks=max(1, len(groups)))
    for stage in stages:
        options: dict[str, Any] = {"batch_size": 1, "batch_format": "numpy", **stage.resources}
        if stage.compute == "actors":
            options["compute"] = ray.data.ActorPoolStrategy(
                size=max(1, min(workers, len(groups))), max_tasks_in_flight_per_actor=in_flight
            )
            options["fn_constructor_kwargs"] = stage.kwargs
            options["max_restarts"] = -1
            options["max_task_retries"] = retries
        else:
            options["fn_kwargs"] = stage.kwargs
            options["max_retries"] = retries
        with warnings.catch_warnings():
            # Ray 2.60 deprecates actor options given to map_batches, and has no other place
            # for max_task_retries yet (the version is pinned in the "ray" extra)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            dataset = dataset.map_batches(stage.fn, **options)
    return dataset
