"""The Ray engine: explain a run's images on a Ray cluster, through Ray Data stages.

The run is a Ray Data pipeline over a dataset of image groups (``batch_size`` images each, formed
once on the driver, so a group is the same whenever it is retried) through the three stages of
``gradcampp.stages`` (the functions the local engine calls), laid out in one of two ways
(``engines.ray_stages``; ``stages="auto"`` picks ``"split"`` when ``gpus_per_worker > 0``,
``"fused"`` otherwise):

- ``"split"``: each stage with a resource budget of its own: *read* as CPU tasks (decoding never
  holds a model's worker), *explain* in a fixed pool of actors that each load the model once
  (the only stage given GPUs, with ``gpus_per_worker``), *write* as CPU tasks (a slow writer
  holds back the stages before it through Ray Data's backpressure instead of filling memory);
- ``"fused"``: one fixed pool of actors, each of which loads the model once and reads, explains
  and writes its groups in its own process (nothing crosses the object store but the groups'
  file names and the records).

Only small records (the content of ``NAME.json``) come back to the driver, which shows the
progress and finishes the run as the local engine does (``engines.run.finish_run``:
``predictions.csv`` and the report). Memory is bounded by the groups in flight, not by the data
set.

A task whose process dies is tried again, and an actor whose process dies is restarted by Ray
(``max_restarts=-1``) and its call tried again, at most ``GROUP_RETRIES`` more times (not Ray
Data's default of for ever: a model that crashes on one image would never let the run end). The
groups that still failed are then run again one image per group, at most ``1 + IMAGE_RETRIES``
times each; an image that ends the process reading, explaining or writing it even alone is
reported as skipped. Since every file of a group has a fixed name and is renamed into place when
complete, a retried group rewrites the same files and nothing is written twice; the temporary
files a dying worker leaves are removed at the end.

Before anything starts, the request (workers, CPUs and GPUs per worker) is checked against the
cluster's resources (:func:`plan_workers`, :func:`stage_cpus`), and an address where nothing
answers fails at once (:func:`check_reachable`) instead of after Ray's minutes of retries.

Every worker writes into the output directory itself: on a cluster of several machines it must
be a path that all of them see (a shared file system), as must the inputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp._ray import READ_CPUS, actor_cpus, choose_layout, import_ray, kept_cpus
from gradcampp.engines.ray_stages import RayStage, build_dataset, stage_plan
from gradcampp.engines.run import RunOptions, RunResult, finish_run, plan_run, progress_bar
from gradcampp.model_specs import LoadedModel, ModelSpecError
from gradcampp.outputs import display_path
from gradcampp.parquet import DATASET
from gradcampp.recipe import ModelRecipe
from gradcampp.stages.explain import ExplainStage, first_line
from gradcampp.stages.settings import Settings
from gradcampp.stages.write import is_temporary

__all__ = ["import_ray", "plan_workers", "run_ray", "stage_cpus"]


GROUP_RETRIES = 2  # a group whose worker process dies is tried 1 + GROUP_RETRIES times,
IMAGE_RETRIES = 1  # then each of its images alone, 1 + IMAGE_RETRIES times
CONNECT_TIMEOUT_S = 5.0  # for a HOST:PORT to answer before Ray is asked to join it
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, SETTINGS, stream 0
HTTP2_SETTINGS = 4


def _groups(plan: Any, todo: Sequence[int], size: int, first: int = 0) -> list[dict[str, Any]]:
    """The rows of the run's dataset: ``todo`` (indices into ``plan.paths``) cut into groups of
    ``size`` images, numbered from ``first`` (the number names a group's Parquet part file)."""
    groups = []
    for number, start in enumerate(range(0, len(todo), size), start=first):
        chunk = todo[start : start + size]
        groups.append(
            {
                "group": number,
                "indices": list(chunk),
                "files": [str(plan.paths[i].absolute()) for i in chunk],
                "names": [plan.names[i] for i in chunk],
            }
        )
    return groups


def cluster_address(address: str | None) -> str | None:
    """The cluster a run joins: ``address``, else ``RAY_ADDRESS`` when it is set and not empty
    (as ``ray.init`` reads it), else None: a local Ray started for the run."""
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or None
    return address


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``).

    ``ray.init`` retries an address that does not answer for minutes, printing only its own
    warnings, and a Ctrl-C waits for its blocking calls. One TCP connection with a timeout, and
    the first frame of an HTTP/2 exchange (Ray's servers speak gRPC: a server answers the client's
    preface with a SETTINGS frame, type 4), tell the same at once. Other forms (``auto``) are left
    to Ray, which fails at once when it finds no cluster.

    Raises:
        ConnectionError: when the connection is refused or times out, with the reason.
    """
    text = address.strip()
    if text.startswith("ray://"):
        text = text[len("ray://") :]
    elif "://" in text:
        return
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    host = host.strip("[]")
    try:
        connection = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ConnectionError(
            f"cannot join the Ray cluster at {address}: nothing answers at {host}:{port} "
            f"({reason}); start it with `ray start --head` or check --address"
        ) from error
    with connection:
        try:  # Ray's GCS and Ray Client servers speak gRPC: HTTP/2, which answers with SETTINGS
            connection.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            header = connection.recv(9)
        except OSError:
            header = b""
    if len(header) < 4 or header[3] != HTTP2_SETTINGS:
        raise ConnectionError(
            f"cannot join the Ray cluster at {address}: {host}:{port} accepts connections but "
            f"does not answer as Ray (no gRPC reply within {timeout:g} s); check --address"
        )


@contextmanager
def _quiet_core_worker() -> Iterator[None]:
    """``ray.init`` with Ray's C++ logging at ``fatal`` in this process's Ray core worker (and,
    without an address, in the local Ray's processes), unless ``RAY_BACKEND_LOG_LEVEL`` is set.

    Ray's core worker writes its error-level lines to the driver's stderr. On every Ray Data run
    with restartable actors (``max_restarts=-1``, which the engine relies on) it logs one that
    warns that the actors' constructor arguments live in the object store (ray-project/ray issue
    53727): not a fault of the run, and it lands inside the progress bar. A worker that really
    fails is reported by the run itself (the images it did not explain, and why). The core
    worker reads the level when ``ray.init`` starts it, and announces it on stderr with a line
    of its own: file descriptor 2 goes to /dev/null for the length of ``ray.init`` (a failure
    to connect is raised, and reported in one line by the caller).
    """
    name = "RAY_BACKEND_LOG_LEVEL"
    if name in os.environ:
        yield
        return
    os.environ[name] = "fatal"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.environ.pop(name, None)


def worker_processes(cpus: float, layout: str = "split") -> int:
    """The worker processes a local Ray keeps alive when idle: one per CPU (Ray's default), and
    in the ``"split"`` layout one per reading or writing task that can run at once:
    ``ceil(C) + ceil(min(1, C/2) / t)`` with ``t = READ_CPUS`` (``"fused"``: ``ceil(C)``, it has
    no tasks).

    With Ray's default (one per CPU) the model actors take most of the kept processes, and each
    reading or writing task would then start a new process that imports the libraries again.
    """
    if layout == "fused":
        return math.ceil(cpus)
    return math.ceil(cpus) + math.ceil(kept_cpus(cpus) / READ_CPUS)


@contextmanager
def connect(address: str | None, num_cpus: int | None, layout: str = "split") -> Iterator[Any]:
    """Ray, connected: to ``address`` (or ``RAY_ADDRESS``), or to a local instance started here
    (with ``num_cpus`` CPUs, and room for :func:`worker_processes` idle worker processes of the
    run's ``layout``) and stopped on exit; a connection that this process already has is used as
    it is.

    Raises:
        ConnectionError: when the cluster cannot be joined.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = cluster_address(address)
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address is not None:
        check_reachable(address)
    with _quiet_core_worker():
        if address is None:
            cpus = num_cpus if num_cpus is not None else _cores()
            system = {"num_workers_soft_limit": worker_processes(cpus, layout)}
            ray.init(num_cpus=num_cpus, _system_config=system, **options)
        else:
            try:
                ray.init(address=address, **options)
            except (ConnectionError, ValueError, RuntimeError) as error:
                message = f"cannot join the Ray cluster at {address}: {first_line(error)}"
                raise ConnectionError(message) from error
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data without its own progress bars and execution logs (the run shows its own), and
    going on past a failed task (``max_errored_blocks=-1``): a task fails only when its worker
    process died, and ``run_ray`` retries its images itself."""
    context = ray.data.DataContext.get_current()
    wanted = {
        "enable_progress_bars": False,
        "print_on_execution_start": False,
        "enable_auto_log_stats": False,
        "max_errored_blocks": -1,
    }
    saved = {name: getattr(context, name) for name in wanted if hasattr(context, name)}
    logger = logging.getLogger("ray.data")
    level = logger.level
    for name in saved:
        setattr(context, name, wanted[name])
    logger.setLevel(logging.CRITICAL)  # a failed task is logged as an error; it is handled here
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        logger.setLevel(level)


@contextmanager
def _no_raylet_messages() -> Iterator[None]:
    """The driver prints the raylet's messages (a worker died, its task is retried) on stdout,
    through the switch that Ray's own debugger turns off while it runs: off here, for a run that
    reports such failures itself (put around ``connect``, so that messages arriving while Ray
    shuts down are not printed either)."""
    worker = getattr(getattr(import_ray(), "_private", None), "worker", None)
    printing = getattr(worker, "_worker_logs_enabled", None)
    if printing is not None:
        worker._worker_logs_enabled = False  # type: ignore[union-attr]
    try:
        yield
    finally:
        if printing is not None:
            worker._worker_logs_enabled = printing  # type: ignore[union-attr]


def plan_workers(
    resources: Mapping[str, float],
    workers: int | None,
    cpus_per_worker: float,
    gpus_per_worker: float,
) -> tuple[int, str | None]:
    """How many workers a cluster with ``resources`` runs, and a note when it is fewer than asked.

    A worker is one model actor (of the explain stage in the ``"split"`` layout, of the whole
    run in the ``"fused"`` one). Each uses ``cpus_per_worker`` CPUs' worth of threads and reserves
    ``gpus_per_worker`` GPUs, so
    ``room = min(floor(CPU / cpus_per_worker), floor(GPU / gpus_per_worker))`` (the GPU term only
    when ``gpus_per_worker > 0``), in both layouts. What an actor reserves of the CPUs is
    :func:`stage_cpus`: ``cpus_per_worker`` when fused; when split, at most ``cpus_per_worker``,
    less when the actors would otherwise leave the reading and writing tasks less than
    ``min(1, CPU / 2)`` CPUs. Ray would wait for ever for a worker that does not fit, so the
    request is checked here, before anything starts.

    Args:
        resources: the cluster's total resources (``ray.cluster_resources()``: ``{"CPU": 2.0,
            "GPU": 1.0, ...}``).
        workers: the workers asked for (None: as many as there is room for).
        cpus_per_worker, gpus_per_worker: what each worker uses (CPUs) and reserves (GPUs).

    Returns:
        ``(workers that run, note)``: the note (one line) says why fewer run than were asked.

    Raises:
        ValueError: when not one worker fits, naming what each needs and what the cluster has.
    """
    cpus = float(resources.get("CPU", 0.0))
    gpus = float(resources.get("GPU", 0.0))
    room = int(np.floor(cpus / cpus_per_worker + 1e-9))
    if gpus_per_worker > 0:
        room = min(room, int(np.floor(gpus / gpus_per_worker + 1e-9)))
    has = f"{cpus:g} CPU(s) and {gpus:g} GPU(s)"
    if room < 1:
        needs = f"{cpus_per_worker:g} CPU(s)"
        hint = "give a cluster with more CPUs"
        if gpus_per_worker > 0:
            needs += f" and {gpus_per_worker:g} GPU(s) (--gpus-per-worker)"
            hint = "run on a cluster with GPUs, or give --gpus-per-worker 0 to run on CPUs"
        raise ValueError(
            f"the Ray cluster has {has}, not enough for one worker, which needs {needs}: {hint}"
        )
    if workers is None:
        return room, None
    if workers > room:
        return room, (
            f"--workers {workers}: the Ray cluster has {has}, room for {room} worker(s), so "
            f"{room} run"
        )
    return workers, None


def stage_cpus(
    resources: Mapping[str, float], workers: int, cpus_per_worker: float, layout: str = "split"
) -> tuple[float, float]:
    """What each model actor and each reading or writing task of a run reserves, in CPUs.

    ``"split"``: the read and write stages are tasks of ``min(READ_CPUS, C / 4)`` CPUs each
    (``READ_CPUS``: a quarter of a CPU); the ``n`` model actors together leave them
    ``K = min(1, C / 2)`` of the cluster's ``C`` CPUs, each reserving
    ``min(cpus_per_worker, (C - K) / n)`` (``gradcampp._ray.actor_cpus``). Without this the
    actors could hold every CPU and the tasks would wait for ever (Ray Data reports them as
    backpressured, and the run hangs without an error).

    ``"fused"``: each actor reserves ``cpus_per_worker`` (its reading and writing run inside
    it) and no CPU is kept for tasks, since there are none: ``(cpus_per_worker, 0)``.
    :func:`plan_workers` has already checked that ``n * cpus_per_worker <= C``.

    The reservation only decides where Ray places an actor: its threads are set apart
    (``threads_per_worker``).

    Returns:
        ``(CPUs per actor, CPUs per task)``.

    Raises:
        ValueError: for a ``layout`` other than ``"split"`` or ``"fused"``.
    """
    cpus = float(resources.get("CPU", 0.0))
    if layout == "fused":
        return float(cpus_per_worker), 0.0
    if layout != "split":
        raise ValueError(f"layout must be 'split' or 'fused', got {layout!r}")
    return actor_cpus(cpus, workers, most=cpus_per_worker), min(READ_CPUS, cpus / 4)


def _remove_temporaries(out_dir: Path) -> None:
    """Remove the temporary files that a worker left when its process died while writing."""
    for folder in (out_dir, out_dir / DATASET):
        for entry in folder.iterdir() if folder.is_dir() else ():
            if is_temporary(entry) and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)


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
    options: RunOptions | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    threads_per_worker: int | None = None,
    stages: str = "auto",
    loaded: LoadedModel | None = None,
) -> RunResult:
    """Explain ``paths`` on a Ray cluster and write the same files as the local engine.

    Args:
        recipe: how to load the model (on the driver to check it, then once per worker).
        paths: the inputs, in order; unreadable ones are skipped and listed in the result.
        out_dir: the output directory, seen by every worker.
        settings: what to compute and write.
        options: resume, report sample, title, notes, progress bar (default: ``RunOptions()``).
        address: the cluster to join (``ray.init(address=...)``: ``"auto"``, ``"HOST:PORT"``,
            ``"ray://HOST:10001"``); None: ``RAY_ADDRESS`` when it is set, else a local Ray
            started for the run (with ``workers`` CPUs, at most this machine's cores) and stopped
            at the end. A connection this process already has is used as it is.
        workers: actors, each holding one model; None: as many as the cluster's CPUs (or GPUs,
            with ``gpus_per_worker``) allow. More than fit: as many as fit, and a note says so.
        gpus_per_worker: GPUs each actor reserves (fractions share a GPU); the model then
            goes to ``cuda`` when the recipe's device is ``"cpu"``.
        cpus_per_worker: CPUs each actor reserves.
        threads_per_worker: PyTorch threads per actor (None: ``cpus_per_worker``).
        stages: how the stages are laid out: ``"split"`` (read and write as CPU tasks, explain
            in the actors), ``"fused"`` (each actor reads, explains and writes its groups) or
            ``"auto"``: split when ``gpus_per_worker > 0``, fused otherwise
            (``gradcampp._ray.choose_layout``).
        loaded: the model already loaded on the driver, if the caller has it.

    Raises:
        ModelSpecError: a model that cannot be loaded or explained, here or on a worker.
        ValueError: ``resume`` into a run with other settings, a cluster without room for one
            worker, or an unknown ``stages``.
        ConnectionError: ``address`` cannot be reached.
        RuntimeError: an unexpected error on a worker (its type and message).
        ImportError: Ray Data is not installed.
    """
    import_ray()
    options = RunOptions() if options is None else options
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise ValueError(
            f"gpus_per_worker must be >= 0 and cpus_per_worker > 0, got {gpus_per_worker} and "
            f"{cpus_per_worker}"
        )
    layout = choose_layout(stages, gpus_per_worker)
    if loaded is None:
        loaded = recipe.load(device="cpu")
    ExplainStage(
        loaded, settings
    )  # a bad layer or an unsupported model fails here, not on a worker
    out_dir = Path(out_dir).absolute()
    plan = plan_run(loaded, paths, out_dir, settings, options.resume)
    records: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    remarks: list[str] = []
    if plan.todo:
        worker_recipe = recipe
        if gpus_per_worker > 0 and recipe.device == "cpu":
            from dataclasses import replace

            worker_recipe = replace(recipe, device="cuda")
        address = cluster_address(address)
        local_cpus = None
        if address is None and workers is not None:  # a local Ray: at most this machine's cores
            local_cpus = min(math.ceil(workers * cpus_per_worker), _cores())
        with (
            _no_raylet_messages(),
            connect(address, local_cpus, layout) as ray,
            _quiet_ray_data(ray),
        ):
            workers, note = plan_workers(
                ray.cluster_resources(), workers, cpus_per_worker, gpus_per_worker
            )
            if note is not None:
                remarks.append(note)
            actor_share, task_share = stage_cpus(
                ray.cluster_resources(), workers, cpus_per_worker, layout
            )
            run_stages = stage_plan(
                loaded,
                worker_recipe,
                settings,
                out_dir,
                plan.run_id,
                actor_cpus=actor_share,
                task_cpus=task_share,
                gpus_per_worker=gpus_per_worker,
                threads=threads_per_worker or max(1, int(cpus_per_worker)),
                search_path=os.getcwd(),
                layout=layout,
            )
            bar = progress_bar(len(plan.todo), options.progress and len(plan.todo) > 3)
            seen: set[int] = set()

            def take(row: dict[str, Any]) -> None:
                index, payload = int(row["index"]), str(row["payload"])
                if row["status"] == "error":
                    kind, _, message = payload.partition(": ")
                    if kind == "ModelSpecError":
                        raise ModelSpecError(message)
                    raise RuntimeError(f"a Ray worker failed: {payload}")
                if row["status"] == "note":
                    remarks.append(payload)
                    return
                seen.add(index)
                if row["status"] == "done":
                    records.append(json.loads(payload))
                else:
                    skipped.append((display_path(plan.paths[index]), payload))
                bar.update(1)

            try:
                groups = _groups(plan, plan.todo, settings.batch_size)
                _run_pass(ray, groups, run_stages, workers, GROUP_RETRIES, take)
                # a group whose worker process died 1 + GROUP_RETRIES times: its images alone
                left = [i for i in plan.todo if i not in seen]
                if left:  # one task per actor at a time: a death then costs no other image a try
                    alone = _groups(plan, left, 1, first=len(groups))
                    _run_pass(ray, alone, run_stages, workers, IMAGE_RETRIES, take, 1)
                for i in plan.todo:
                    if i not in seen:
                        reason = (
                            f"the worker process explaining it died, {1 + IMAGE_RETRIES} times "
                            "with it alone (the model or a library it calls crashed on this "
                            "input; Ray's worker logs say more)"
                        )
                        skipped.append((display_path(plan.paths[i]), reason))
                        bar.update(1)
            except Exception as error:
                found = _model_error(error)
                if found is not None:
                    raise ModelSpecError(str(found)) from error
                raise
            finally:
                bar.close()
                _remove_temporaries(out_dir)
    return finish_run(plan, records, skipped, options, remarks)


def _cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _run_pass(
    ray: Any,
    groups: list[dict[str, Any]],
    stages: Sequence[RayStage],
    workers: int,
    retries: int,
    take: Any,
    in_flight: int | None = None,
) -> None:
    """Run ``groups`` through the run's stages (``ray_stages.build_dataset``) and hand each
    output row to ``take``.

    A task or actor call whose process died ``1 + retries`` times gives no rows
    (``max_errored_blocks=-1``, set by ``_quiet_ray_data``), and the caller sees which images
    did not come back. ``in_flight``: the calls an actor holds at a time (None: Ray Data's
    default).
    """
    if not groups:
        return
    dataset = build_dataset(ray, groups, stages, workers, retries, in_flight)
    for row in dataset.iter_rows():
        take(row)
