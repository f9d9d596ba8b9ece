"""Where an explain run executes: in this process (``local``) or on a Ray cluster (``ray_engine``).

Both engines do the same per-image work (``work``), plan and finish a run the same way
(``outputs``) and write the same files, so a run's outputs do not depend on the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradcampp.engines.recipe import ModelRecipe
    from gradcampp.engines.work import Settings
    from gradcampp.model_specs import LoadedModel
    from gradcampp.pipeline import RunResult

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
        resume, report_sample, title, progress: as for ``gradcampp.engines.local.run_local``.
        notes: per input, a text under its name in the report (local engine only).
        **ray_options: ``address``, ``workers``, ``gpus_per_worker``, ``cpus_per_worker``,
            ``threads_per_worker`` of ``gradcampp.engines.ray_engine.run_ray``.

    Raises:
        ValueError: for an unknown engine, Ray options with the local engine, or notes with Ray.
    """
    common: dict[str, Any] = {
        "resume": resume,
        "report_sample": report_sample,
        "title": title,
        "progress": progress,
    }
    if engine == "local":
        if ray_options:
            raise ValueError(f"{sorted(ray_options)} apply to engine='ray' only")
        from dataclasses import asdict

        from gradcampp import pipeline

        model = loaded if loaded is not None else recipe.load()
        options = asdict(settings)
        options["methods"] = tuple(settings.methods)
        return pipeline.explain_images(model, paths, out_dir, notes=notes, **options, **common)
    if engine == "ray":
        if notes is not None:
            raise ValueError("notes are supported by engine='local' only")
        from gradcampp.engines.ray_engine import run_ray

        return run_ray(recipe, paths, out_dir, settings, loaded=loaded, **common, **ray_options)
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
