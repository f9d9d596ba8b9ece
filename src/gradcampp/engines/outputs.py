"""Starting and finishing an explain run: what is already done, ``predictions.csv``, the report.

Both engines call :func:`plan_run` before explaining and :func:`finish_run` after, so a run
gives the same run-level files whichever engine explained its images, and in whatever order
the images came back: records are put in input order before anything is written.

``.gradcampp-run`` (JSON) in the output directory holds the settings that decide the outputs (model,
methods, classes, layer, preprocessing, format). ``--resume`` continues only a run with the same
settings; it takes an image as done when its ``NAME.json`` (or, for Parquet output, its row) is
there and names the same input, and explains the rest.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradcampp._files import write_text
from gradcampp.engines.parquet import DATASET, read_records
from gradcampp.engines.work import Settings, is_temporary
from gradcampp.model_specs import LoadedModel
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

RUN_FILE = ".gradcampp-run"
CSV_HEADER = ["image", "input", "rank", "class_index", "class_name", "probability"]


def run_settings(loaded: LoadedModel, settings: Settings) -> dict[str, Any]:
    """The settings recorded in ``.gradcampp-run``: everything that decides an image's outputs."""
    values = asdict(settings)
    values.pop("batch_size")  # the maps do not depend on it
    if settings.map_dtype == "float32":  # as recorded before maps could be stored in float16
        values.pop("map_dtype")
    values["methods"] = list(settings.methods)
    pre = loaded.preprocess
    return {
        "model": loaded.description,
        "classes": None if loaded.classes is None else len(loaded.classes),
        "preprocess": {
            "size": list(pre.size),
            "resize": pre.resize,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "channels_last": pre.channels_last,
        },
        **values,
    }


@dataclass
class RunPlan:
    """What a run has to do.

    Attributes:
        paths: every input, in order; names: their unique output stems (stable across reruns).
        todo: the indices into ``paths`` still to explain.
        done: the records of the images a previous run already wrote (``--resume``).
        run_id: names this run's Parquet part files apart from an earlier run's.
    """

    paths: list[Path]
    names: list[str]
    todo: list[int]
    done: list[dict[str, Any]] = field(default_factory=list)
    run_id: str = field(
        default_factory=lambda: time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    )


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)
    ]


def _complete(out_dir: Path, record: Any, path: Path) -> bool:
    """Whether ``record`` is of input ``path`` and every file it lists exists."""
    if not isinstance(record, dict) or record.get("input") != relative_path(path, out_dir):
        return False
    files = record.get("files", {})
    listed = [files.get("input")]
    for group in ("overlays", "maps"):
        for value in files.get(group, {}).values():
            listed.extend(value if isinstance(value, list) else [value])
    return all(f is None or (out_dir / f).is_file() for f in listed)


def _json_record(out_dir: Path, name: str) -> Any:
    try:
        return json.loads((out_dir / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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
        resume: keep what a previous run with the same settings wrote; without it every input
            is explained (and its files overwritten).

    Raises:
        ValueError: when ``resume`` finds a ``.gradcampp-run`` with other settings (the message
            lists the differences).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list(paths)
    names = unique_names(paths, out_dir, settings.methods)
    current = run_settings(loaded, settings)
    run_file = out_dir / RUN_FILE
    previous = None
    if resume and run_file.is_file():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if previous is not None and previous != current:
            raise ValueError(
                f"--resume: {out_dir} holds a run with other settings ("
                + "; ".join(_differences(previous, current))
                + "); rerun with the same options or choose another --out"
            )
    for folder in (out_dir, out_dir / DATASET):  # temporary files of a run that was killed
        for stale in folder.iterdir() if folder.is_dir() else ():
            if is_temporary(stale) and stale.is_file():
                stale.unlink(missing_ok=True)
    if not resume:  # a fresh run replaces the dataset of an earlier one, never adds to it
        for part in (out_dir / DATASET).glob("part-*.parquet"):
            part.unlink()
    write_text(run_file, json.dumps(current, indent=2))
    plan = RunPlan(paths, names, list(range(len(paths))))
    if previous is None:
        return plan
    if settings.format == "parquet":
        written = {r["name"]: r for r in read_records(out_dir, settings)}
        found = [written.get(name) for name in names]
    else:
        found = [_json_record(out_dir, name) for name in names]
    found = [r if _complete(out_dir, r, p) else None for r, p in zip(found, paths, strict=True)]
    plan.todo = [i for i, record in enumerate(found) if record is None]
    plan.done = [record for record in found if record is not None]
    return plan


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
    return ReportEntry(
        name=Path(record["input"]).name,
        image=files["input"],
        panels=panels,
        predictions=[(row["class_name"], row["probability"]) for row in record["top_classes"]],
        note=note,
        files=links,
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
