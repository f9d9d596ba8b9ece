"""The local engine: explain a run's images in this process, one group after the other."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp.engines.outputs import finish_run, plan_run
from gradcampp.engines.parquet import part_path
from gradcampp.engines.threads import chosen_threads
from gradcampp.engines.work import ImageWork, Settings
from gradcampp.images import ImageReadError
from gradcampp.model_specs import LoadedModel
from gradcampp.outputs import display_path
from gradcampp.pipeline import RunResult, progress_bar, read_views


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
    threads: int | None = None,
) -> RunResult:
    """Explain ``paths`` with ``loaded`` in this process and write every output file.

    Memory is bounded by the group: each image is reduced to the model's view as it is read.

    Args:
        loaded: the model with its preprocessing and class names.
        paths: the inputs, in order; unreadable ones, and ones the model fails on, are skipped
            and listed in the result.
        out_dir: the output directory (created if needed).
        settings: what to compute and write.
        resume: explain only the images a previous run into ``out_dir`` did not finish.
        report_sample: keep the report to this many images (None: all).
        title: the report's title; notes: per input path, a text under its name in the report.
        progress: show a progress bar on stderr (only for more than 3 images).
        threads: PyTorch threads for the run; None: measured (``gradcampp.engines.threads``:
            one thread or PyTorch's default, whichever explains the first groups faster),
            unless ``OMP_NUM_THREADS`` is set. PyTorch's own setting is restored at the end.

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
    remarks: list[str] = []
    bar = progress_bar(len(todo), progress and len(todo) > 3)
    pending: list[tuple[Path, str, np.ndarray]] = []
    groups = 0

    def flush() -> None:
        nonlocal groups
        if not pending:
            return
        part = part_path(out_dir, plan.run_id, groups) if settings.format == "parquet" else None
        with choice.group(len(pending)) if choice is not None else nullcontext():
            done = work.run(pending, out_dir, part)
        records.extend(done.records)
        skipped.extend(done.skipped)
        bar.update(len(pending))
        pending.clear()
        groups += 1

    torch_model = loaded.framework == "torch"
    with chosen_threads(threads) if torch_model else nullcontext() as choice:
        try:
            for path, view in read_views(todo, loaded.preprocess, remarks):
                if isinstance(view, ImageReadError):
                    skipped.append((display_path(path), view.reason))
                    bar.update(1)
                    continue
                pending.append((path, names[path], view))
                if len(pending) == settings.batch_size:
                    flush()
            flush()
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
        notes=notes,
        report_sample=report_sample,
    )
    result.notes.extend(remarks)
    return result
