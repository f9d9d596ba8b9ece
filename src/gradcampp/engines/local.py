"""The local engine: explain a run's images in this process, one group after the other."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gradcampp.engines.outputs import finish_run, plan_run
from gradcampp.engines.parquet import part_path
from gradcampp.engines.work import ImageWork, Settings
from gradcampp.images import ImageReadError, read_batches
from gradcampp.model_specs import LoadedModel
from gradcampp.pipeline import Progress, RunResult


def run_local(
    loaded: LoadedModel,
    paths: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    *,
    resume: bool = False,
    report_sample: int | None = None,
    title: str = "Grad-CAM++ explanations",
    notes: Callable[[Path], str] | None = None,
    progress: bool = True,
) -> RunResult:
    """Explain ``paths`` with ``loaded`` in this process and write every output file.

    Args:
        loaded: the model with its preprocessing and class names.
        paths: the inputs, in order; unreadable ones are skipped and listed in the result.
        out_dir: the output directory (created if needed).
        settings: what to compute and write.
        resume: explain only the images a previous run into ``out_dir`` did not finish.
        report_sample: keep the report to this many images (None: all).
        title: the report's title; notes: per input path, a text under its name in the report.
        progress: show a progress bar on stderr (only for more than 3 images).

    Raises:
        ModelSpecError: bad layer, unsupported model, or a target outside the model's classes.
        ValueError: ``resume`` into a run with other settings.
    """
    work = ImageWork(loaded, settings)  # checks the layer before anything is written
    plan = plan_run(loaded, paths, out_dir, settings, resume)
    todo = [plan.paths[i] for i in plan.todo]
    names = {plan.paths[i]: plan.names[i] for i in plan.todo}
    records: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    bar = Progress(len(todo), progress and len(todo) > 3)
    for group_index, group in enumerate(read_batches(todo, settings.batch_size)):
        good = []
        for path, image in group:
            if isinstance(image, ImageReadError):
                skipped.append((str(path), image.reason))
            else:
                good.append((path, names[path], image))
        part = part_path(out_dir, plan.run_id, group_index)
        records.extend(work.run(good, out_dir, part if settings.format == "parquet" else None))
        bar.update(len(group))
    bar.close()
    return finish_run(
        plan,
        out_dir,
        loaded,
        settings,
        records,
        skipped,
        title=title,
        notes=notes,
        report_sample=report_sample,
    )
