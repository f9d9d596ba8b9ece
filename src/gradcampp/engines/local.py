"""The local engine: a loop over groups of images in this process through the three stages.

Each input is read (``stages.read``) as the loop reaches it; every ``batch_size`` views go through
the explain stage (``stages.explain``) and then the write stage (``stages.write``), so memory is
bounded by one group. The run is planned and finished as on every engine (``engines.run``), and
PyTorch's thread count is chosen by measuring (``engines.threads``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp.engines.run import RunOptions, RunResult, finish_run, plan_run, progress_bar
from gradcampp.engines.threads import chosen_threads
from gradcampp.images import ImageReadError
from gradcampp.model_specs import LoadedModel
from gradcampp.outputs import display_path
from gradcampp.parquet import part_path
from gradcampp.stages.explain import ExplainStage
from gradcampp.stages.read import read_views
from gradcampp.stages.settings import Settings
from gradcampp.stages.write import write_group


def run_local(
    loaded: LoadedModel,
    paths: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    options: RunOptions | None = None,
    *,
    threads: int | None = None,
) -> RunResult:
    """Explain ``paths`` with ``loaded`` in this process and write every output file.

    Args:
        loaded: the model with its preprocessing and class names.
        paths: the inputs, in order; unreadable ones, and ones the model fails on, are skipped
            and listed in the result.
        out_dir: the output directory (created if needed).
        settings: what to compute and write.
        options: resume, report sample, title, notes, progress bar (default: ``RunOptions()``).
        threads: PyTorch threads for the run; None: measured (``gradcampp.engines.threads``:
            one thread or PyTorch's default, whichever explains the first groups faster),
            unless ``OMP_NUM_THREADS`` is set. PyTorch's own setting is restored at the end.

    Raises:
        ModelSpecError: bad layer, unsupported model, or a target outside the model's classes.
        ValueError: ``resume`` into a run with other settings.
        OSError: when the run's files cannot be written.
    """
    options = RunOptions() if options is None else options
    explain = ExplainStage(loaded, settings)  # checks the layer before anything is written
    plan = plan_run(loaded, paths, out_dir, settings, options.resume)
    todo = [plan.paths[i] for i in plan.todo]
    names = {plan.paths[i]: plan.names[i] for i in plan.todo}
    records: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    remarks: list[str] = []
    bar = progress_bar(len(todo), options.progress and len(todo) > 3)
    pending: list[tuple[Path, str, np.ndarray]] = []
    groups = 0

    def flush() -> None:
        nonlocal groups
        if not pending:
            return
        part = part_path(out_dir, plan.run_id, groups) if settings.format == "parquet" else None
        with choice.group(len(pending)) if choice is not None else nullcontext():
            found = explain([view for _, _, view in pending])
            done = write_group(
                pending, found, out_dir, settings, loaded=loaded, layer=explain.layer, part=part
            )
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
    return finish_run(plan, records, skipped, options, remarks)
