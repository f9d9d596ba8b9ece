"""Starting and finishing an explain run: what is already done, ``predictions.csv``, the report.

Both engines call :func:`plan_run` before explaining and :func:`finish_run` after, so a run
gives the same run-level files whichever engine explained its images, and in whatever order
the images came back: records are put in input order before anything is written.

``.gradcampp-run`` (JSON) in the output directory holds the settings that decide the outputs (model,
methods, classes, layer, preprocessing, format). ``--resume`` continues only a run with the same
settings; it takes an image as done when its ``NAME.json`` (or, for Parquet output, its row) is
there and matches the record schema (``gradcampp.engines.run_file``), and explains the rest. What
may be written where follows the output-folder rules of ``gradcampp.out_folder``.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradcampp._files import write_text
from gradcampp.engines.parquet import DATASET, part_files, read_part_records, stray_files
from gradcampp.engines.run_file import (
    read_json_record,
    read_run_file,
    record_problem,
    run_settings,
    write_run_file,
)
from gradcampp.engines.work import Settings, is_temporary
from gradcampp.model_specs import LoadedModel
from gradcampp.out_folder import check_folder, claim_folder
from gradcampp.outputs import (
    add_to_manifest,
    csv_cell,
    display_path,
    free_run_file,
    relative_path,
    unique_names,
)
from gradcampp.pipeline import METHODS, RunResult
from gradcampp.report import Panel, ReportEntry, write_report

CSV_HEADER = ["image", "input", "rank", "class_index", "class_name", "probability"]


@dataclass
class RunPlan:
    """What a run has to do.

    Attributes:
        paths: every input, in order; names: their unique output stems (stable across reruns).
        todo: the indices into ``paths`` still to explain.
        done: the records of the images a previous run already wrote (``--resume``).
        run_id: names this run's Parquet part files apart from an earlier run's.
        notes: what the user should know (records of an earlier run that are redone, files in
            the dataset folder that are not gradcampp's).
    """

    paths: list[Path]
    names: list[str]
    todo: list[int]
    done: list[dict[str, Any]] = field(default_factory=list)
    run_id: str = field(
        default_factory=lambda: time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    )
    notes: list[str] = field(default_factory=list)


def plan_run(
    loaded: LoadedModel,
    paths: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    resume: bool,
) -> RunPlan:
    """Create ``out_dir``, write ``.gradcampp-run`` and find what is left to explain.

    Args:
        loaded: the model (its description, classes and preprocessing are recorded).
        paths: every input of the run, in order.
        out_dir: the output directory.
        settings: the run's settings.
        resume: keep what a previous run with the same settings wrote (each record checked
            against ``run_file.record_problem``; one that fails is redone and noted); without
            it, or without a run file, every input is explained and the files of gradcampp's
            earlier runs are replaced.

    Raises:
        RunFileError: when ``resume`` finds a run file that is not one, or one with other
            settings (the message lists the differences).
        OutputDirError: when the dataset folder breaks the output-folder rules.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list(paths)
    parquet = settings.format == "parquet"
    purpose = "its Parquet dataset"
    dataset = check_folder(out_dir, DATASET, purpose) if parquet else out_dir / DATASET
    names = unique_names(paths, out_dir, settings.methods)
    current = run_settings(loaded, settings)
    previous = read_run_file(out_dir, current) if resume else None
    if parquet:
        claim_folder(out_dir, DATASET, purpose)
    for folder in (out_dir, dataset):  # temporary files of a run that was killed
        if folder.is_dir() and not folder.is_symlink():
            for stale in folder.iterdir():
                if is_temporary(stale) and stale.is_file():
                    stale.unlink(missing_ok=True)
    if previous is None and dataset.is_dir() and not dataset.is_symlink():
        for part in part_files(out_dir):  # a fresh run replaces an earlier dataset
            part.unlink()
    write_run_file(out_dir, current)
    plan = RunPlan(paths, names, list(range(len(paths))))
    stray = stray_files(out_dir) if parquet else []
    if stray:
        plan.notes.append(
            f"{DATASET} holds {', '.join(map(repr, stray))}, which gradcampp did not write: "
            "pyarrow.parquet.read_table on the folder fails on it; "
            "gradcampp.engines.parquet.read_dataset reads the part files only"
        )
    if previous is None:
        return plan
    inputs = [relative_path(path, out_dir) for path in paths]
    if parquet:
        found = _trusted_rows(out_dir, loaded, settings, names, inputs, plan.notes)
    else:
        found = []
        for name, input_text in zip(names, inputs, strict=True):
            record, problem = read_json_record(out_dir, name)
            if record is not None:
                problem = record_problem(
                    record,
                    out_dir,
                    name=name,
                    input_text=input_text,
                    loaded=loaded,
                    settings=settings,
                )
            if problem is not None:
                plan.notes.append(
                    f"--resume: {name}.json is not a record gradcampp wrote for this run "
                    f"({problem}); {input_text} is explained again"
                )
            found.append(record if problem is None else None)
    plan.todo = [i for i, record in enumerate(found) if record is None]
    plan.done = [record for record in found if record is not None]
    return plan


def _trusted_rows(
    out_dir: Path,
    loaded: LoadedModel,
    settings: Settings,
    names: Sequence[str],
    inputs: Sequence[str],
    notes: list[str],
) -> list[dict[str, Any] | None]:
    """Per image, its trusted row of the dataset, or None. A part file holding a row that cannot
    be trusted is removed (it is gradcampp's) and all its images are redone, so that no image is
    in the dataset twice."""
    position = {name: i for i, name in enumerate(names)}
    found: list[dict[str, Any] | None] = [None] * len(names)
    for part in part_files(out_dir):
        shown = f"{DATASET}/{part.name}"
        problem: str | None
        try:
            records = read_part_records(part, settings)
        except Exception as error:  # pyarrow raises many kinds on a damaged file
            problem = f"it cannot be read ({type(error).__name__})"
            records = []
        else:
            problem = None
            seen = set()
            for record in records:
                i = position.get(record["name"])
                if i is None:
                    continue  # an image of an earlier run that this run does not name
                if i in seen or found[i] is not None:
                    problem = f"image {record['name']!r} appears twice"
                else:
                    problem = record_problem(
                        record,
                        out_dir,
                        name=names[i],
                        input_text=inputs[i],
                        loaded=loaded,
                        settings=settings,
                    )
                if problem is not None:
                    problem = f"the row of {record['name']!r}: {problem}"
                    break
                seen.add(i)
        if problem is None:
            for record in records:
                if record["name"] in position:
                    found[position[record["name"]]] = record
            continue
        part.unlink(missing_ok=True)
        notes.append(
            f"--resume: {shown} cannot be trusted ({problem}); it is removed and its images "
            "are explained again"
        )
    return found


def csv_rows(record: dict[str, Any]) -> list[list[Any]]:
    """The ``predictions.csv`` rows of one record: one per top class."""
    return [
        [
            csv_cell(record["name"]),
            csv_cell(record["input"]),
            row["rank"],
            row["class_index"],
            csv_cell(row["class_name"]),
            f"{row['probability']:.6f}",
        ]
        for row in record["top_classes"]
    ]


def report_entry(record: dict[str, Any], settings: Settings, note: str = "") -> ReportEntry:
    """The report row of one record (its pictures must exist: ``settings.overlays``)."""
    files = record["files"]
    panels = []
    for method in settings.methods:
        pngs = files["overlays"][method]
        for t, (png, explained) in enumerate(
            zip(pngs if isinstance(pngs, list) else [pngs], record["explained"], strict=True)
        ):
            rank = f"#{t + 1} " if settings.top_k else ""
            caption = f"{explained['class_name']} ({100 * explained['probability']:.1f}%)"
            panels.append(Panel(png, rank + caption))
    links = [(f"{METHODS[m][1]} map (.npy)", files["maps"][m]) for m in files["maps"]]
    if settings.format == "files":
        links.append(("predictions (.json)", f"{record['name']}.json"))
    compared = [e["disagreement"] for e in record["explained"] if "disagreement" in e]
    return ReportEntry(
        name=Path(record["input"]).name,
        image=files["input"],
        panels=panels,
        predictions=[(row["class_name"], row["probability"]) for row in record["top_classes"]],
        note=note,
        files=links,
        disagreement=compared if len(compared) == len(record["explained"]) else (),
    )


def report_columns(settings: Settings) -> list[str]:
    """The overlay columns of the report: one per method (several classes stack in it)."""
    return [METHODS[m][1] for m in settings.methods]


def sample_indices(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (first and last included), or all of them."""
    if k is None or k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


def finish_run(
    plan: RunPlan,
    out_dir: Path,
    loaded: LoadedModel,
    settings: Settings,
    records: Sequence[dict[str, Any]],
    skipped: Sequence[tuple[str, str]],
    *,
    title: str,
    notes: Callable[[Path], str] | None = None,
    report_sample: int | None = None,
) -> RunResult:
    """Write ``predictions.csv`` and ``index.html`` for the whole run.

    Args:
        plan: the run's plan (inputs, names and the records a previous run left).
        out_dir: the output directory.
        loaded: the model (its description heads the report).
        settings: the run's settings.
        records: the records this run wrote, in any order.
        skipped: ``(input, reason)`` of the inputs that could not be read, in any order.
        title: the report's title; notes: per input, a text shown under its name.
        report_sample: keep the report to this many images, spread evenly over the input order
            (``predictions.csv`` always lists every image); None: every image.

    Returns:
        the run's result: every record (earlier runs' included) and every skipped input, in
        input order, and the report's path (None without overlays: the report shows them).
    """
    position = {name: i for i, name in enumerate(plan.names)}
    by_name = {r["name"]: r for r in plan.done}
    by_name.update({r["name"]: r for r in records})  # a retried image counts once
    ordered = sorted(by_name.values(), key=lambda r: position[r["name"]])
    where = {display_path(p): i for i, p in enumerate(plan.paths)}
    skipped_sorted = sorted(dict(skipped).items(), key=lambda s: where.get(s[0], len(where)))
    result = RunResult(out_dir, None, records=ordered, skipped=skipped_sorted)
    result.notes.extend(plan.notes)
    result.resumed = len(set(r["name"] for r in plan.done) - set(r["name"] for r in records))
    result.layer = next((r["layer"] for r in ordered if r.get("layer")), None)
    csv_name = free_run_file(out_dir, "predictions.csv", plan.paths)
    index_name = free_run_file(out_dir, "index.html", plan.paths)
    colorbar_name = free_run_file(out_dir, "colorbar.png", plan.paths)
    add_to_manifest(
        out_dir, [csv_name, *([index_name, colorbar_name] if settings.overlays else [])]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for record in ordered:
        writer.writerows(csv_rows(record))
    write_text(out_dir / csv_name, buffer.getvalue())
    if not settings.overlays:
        return result
    shown = [ordered[i] for i in sample_indices(len(ordered), report_sample)]
    entries = [
        report_entry(
            r, settings, notes(plan.paths[position[r["name"]]]) if notes is not None else ""
        )
        for r in shown
    ]
    details = [f"Model: {loaded.description}"]
    if result.layer is not None:
        details.append(f"Explained layer: {result.layer}")
    details.append(
        f"{len(ordered)} image(s) explained"
        + (f", {len(skipped_sorted)} skipped" if skipped_sorted else "")
        + (f"; the report shows {len(shown)} of them" if len(shown) < len(ordered) else "")
    )
    result.report = write_report(
        out_dir,
        entries,
        columns=report_columns(settings),
        title=title,
        details=details,
        skipped=skipped_sorted,
        cmap=settings.cmap,
        index_name=index_name,
        colorbar_name=colorbar_name,
    )
    return result
