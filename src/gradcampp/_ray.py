"""What ``gradcampp.ray``, the Ray engine and the command line share without importing Ray or the
models: importing Ray Data with an error that says how to install it, the CPUs the stages reserve,
and the rule that lays out a run's stages."""

from __future__ import annotations

from typing import Any


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


READ_CPUS = 0.25  # what one reading or writing task reserves: one image at a time, one thread


def kept_cpus(cluster_cpus: float) -> float:
    """CPUs of a cluster kept for the reading and writing tasks: ``min(1, C / 2)``."""
    return min(1.0, cluster_cpus / 2)


def actor_cpus(cluster_cpus: float, concurrency: int, most: float = 1.0) -> float:
    """CPUs each of ``concurrency`` model actors reserves, so that together they never hold every
    CPU of the cluster and reading and writing tasks always have some.

    ``min(most, (C - K) / n)`` with ``C`` the cluster's CPUs, ``n`` the actors and
    ``K = min(1, C / 2)`` the CPUs kept for the other stages (:func:`kept_cpus`; an actor's
    threads are set apart from this reservation, which only decides where Ray places it).

    Raises:
        ValueError: for ``concurrency < 1`` or a cluster without CPUs.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency}")
    if cluster_cpus <= 0:
        raise ValueError(f"the Ray cluster has no CPU (CPU resources: {cluster_cpus})")
    return min(most, (cluster_cpus - kept_cpus(cluster_cpus)) / concurrency)


LAYOUTS = ("auto", "split", "fused")  # how a Ray run lays out its stages (choose_layout)


def choose_layout(stages: str, gpus_per_worker: float) -> str:
    """The stage layout of a run: ``stages`` when it is ``"split"`` or ``"fused"``; for
    ``"auto"``, ``"split"`` when ``gpus_per_worker > 0`` (decoding and encoding then run on CPUs
    beside the GPU) and ``"fused"`` otherwise (on CPUs alone, splitting only adds object-store
    transfers and processes competing for the same cores).

    Raises:
        ValueError: for any other ``stages``, naming the accepted values.
    """
    if stages not in LAYOUTS:
        raise ValueError(f"stages must be one of {', '.join(LAYOUTS)}, got {stages!r}")
    if stages == "auto":
        return "split" if gpus_per_worker > 0 else "fused"
    return stages
