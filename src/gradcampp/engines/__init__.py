"""Where an explain run executes: in this process (``local``) or on a Ray cluster (``ray_engine``).

An engine moves images through the three stages (``gradcampp.stages``: read, explain, write) and
does nothing else to them: both engines plan and finish a run the same way (``engines.run``) and
write the same files, so a run's outputs do not depend on the engine. Nothing below the engines
imports them; :func:`run_job` is the one entry point of the command line and ``gradcampp.ray``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradcampp.engines.run import RunOptions, RunResult

if TYPE_CHECKING:
    from gradcampp.model_specs import LoadedModel
    from gradcampp.recipe import ModelRecipe
    from gradcampp.stages.settings import Settings

__all__ = ["ENGINES", "RunOptions", "RunResult", "run_job"]
ENGINES = ("local", "ray")


def run_job(
    recipe: ModelRecipe,
    paths: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    *,
    engine: str = "local",
    loaded: LoadedModel | None = None,
    resume: bool = False,
    report_sample: int | None = None,
    title: str = "Grad-CAM++ explanations",
    notes: Callable[[Path], str] | None = None,
    progress: bool = True,
    **ray_options: Any,
) -> RunResult:
    """Run an explain job on ``engine`` (what ``gradcampp explain`` does after parsing).

    Args:
        recipe: how to load the model.
        paths: the inputs, in order.
        out_dir: the output directory.
        settings: what to compute and write.
        engine: ``"local"`` (this process) or ``"ray"`` (a Ray cluster).
        loaded: the model, if the caller already loaded it (the local engine then uses it; the
            Ray engine uses it only to check the job).
        resume, report_sample, title, notes, progress: see ``engines.run.RunOptions``.
        **ray_options: ``address``, ``workers``, ``gpus_per_worker``, ``cpus_per_worker``,
            ``threads_per_worker``, ``stages`` of ``gradcampp.engines.ray_engine.run_ray``.

    Raises:
        ValueError: for an unknown engine, or Ray options with the local engine.
    """
    options = RunOptions(
        resume=resume, report_sample=report_sample, title=title, notes=notes, progress=progress
    )
    if engine == "local":
        if ray_options:
            raise ValueError(f"{sorted(ray_options)} apply to engine='ray' only")
        from gradcampp.engines.local import run_local

        model = loaded if loaded is not None else recipe.load()
        return run_local(model, paths, out_dir, settings, options)
    if engine == "ray":
        from gradcampp.engines.ray_engine import run_ray

        return run_ray(recipe, paths, out_dir, settings, options, loaded=loaded, **ray_options)
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
