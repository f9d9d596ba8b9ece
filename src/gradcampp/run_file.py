"""What ``--resume`` trusts: the run file ``.gradcampp-run`` and each image's record.

Everything ``--resume`` reads from the output folder was written by an earlier run, but may have
been edited, truncated or replaced since; so nothing is used until it matches the schema below.

The run file (JSON object, ``run_settings``) holds the settings that decide the outputs: ``model``
(text), ``classes`` (the number of class names or null), ``preprocess`` (``size``, ``resize``,
``mean``, ``std``, ``channels_last``) and the fields of ``Settings`` but ``batch_size``. A run file
that is not such an object (not a regular file, too large, not UTF-8 JSON, a list, ``null``,
other keys) stops ``--resume`` with one line (``RunFileError``): continuing would either redo
every image and duplicate them in a dataset, or trust files of unknown settings. One with other
values stops it too, listing the differences. A run file of an earlier version, which has no
``map_dtype`` or ``pictures``, holds the values that version used (``IMPLIED_SETTINGS``).

An image's record (``NAME.json``, or its row of the Parquet dataset) is trusted when
``record_problem`` finds nothing: a JSON object with exactly the keys ``input``, ``name``,
``model``, ``layer``, ``size``, ``top_classes``, ``explained`` and ``files``; ``input`` and
``name`` those of this image; ``model`` and ``size`` those of the run; top classes ranked
``1..n`` (``n <= show_top``) with integer class indices, the model's class names and
probabilities in ``[0, 1]``, best first; the explained classes the ones the settings ask for;
``files`` exactly the files gradcampp writes for it, each a regular file that is whole (a map
``.npy`` of the image's size, of the length its header states; a PNG that ends with its IEND
chunk, a JPEG with its end-of-image marker). Any other record is redone, and the run says so.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp._files import NotRegularFileError, read_regular, write_text
from gradcampp.model_specs import LoadedModel
from gradcampp.out_folder import RUN_FILE
from gradcampp.outputs import class_name, result_file_names
from gradcampp.stages.settings import Settings

MAX_RUN_FILE_BYTES = 1 << 20
MAX_RECORD_BYTES = 16 << 20
RECORD_KEYS = frozenset(
    ["input", "name", "model", "layer", "size", "top_classes", "explained", "files"]
)
#: How each kind of picture starts and ends when whole: PNG's signature and IEND chunk, JPEG's
#: start-of-image and end-of-image markers.
PICTURE_BOUNDS = {
    ".png": (b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00IEND\xaeB`\x82"),
    ".jpg": (b"\xff\xd8\xff", b"\xff\xd9"),
}


#: Settings that run files of earlier versions leave out, with the value those runs used: maps
#: were float32 before they could be stored in float16, and pictures PNG before JPEG.
IMPLIED_SETTINGS = {"map_dtype": "float32", "pictures": "png"}


class RunFileError(ValueError):
    """The run file of ``--out`` cannot be trusted; the message says why, in one line."""


def run_settings(loaded: LoadedModel, settings: Settings) -> dict[str, Any]:
    """The settings recorded in ``.gradcampp-run``: everything that decides an image's outputs."""
    values = asdict(settings)
    values.pop("batch_size")  # the maps do not depend on it
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


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)
    ]


def read_run_file(out_dir: Path, current: dict[str, Any]) -> dict[str, Any] | None:
    """The run file of ``out_dir`` when it records ``current``'s settings; None when absent.

    Raises:
        RunFileError: when it is not a run file (module docstring) or records other settings.
    """
    path = out_dir / RUN_FILE
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")
    advice = "remove it to start afresh, or choose another --out"
    try:
        data = read_regular(path, MAX_RUN_FILE_BYTES, shown)
    except FileNotFoundError:
        return None
    except (NotRegularFileError, OSError) as error:
        raise RunFileError(f"--resume: {error}; {advice}") from None
    try:
        previous = json.loads(data.decode("utf-8"))
    except ValueError as error:  # also UnicodeDecodeError
        reason = getattr(error, "msg", None) or type(error).__name__
        raise RunFileError(f"--resume: {shown} is not valid JSON ({reason}); {advice}") from None
    if not isinstance(previous, dict):
        raise RunFileError(
            f"--resume: {shown} holds a JSON {type(previous).__name__}, not the object of "
            f"settings gradcampp writes; {advice}"
        )
    previous = {**IMPLIED_SETTINGS, **previous}
    if set(previous) != set(current):
        keys = sorted(set(previous) ^ set(current))
        raise RunFileError(
            f"--resume: {shown} does not hold the settings gradcampp writes (keys missing or "
            f"unknown: {', '.join(map(repr, keys))}); {advice}"
        )
    if previous != current:
        raise RunFileError(
            f"--resume: {out_dir} holds a run with other settings ("
            + "; ".join(_differences(previous, current))
            + "); rerun with the same options or choose another --out"
        )
    return previous


def write_run_file(out_dir: Path, current: dict[str, Any]) -> None:
    """Write ``current`` as the run file of ``out_dir`` (atomically)."""
    write_text(out_dir / RUN_FILE, json.dumps(current, indent=2))


def read_json_record(out_dir: Path, name: str) -> tuple[Any, str | None]:
    """``(record, None)`` from ``NAME.json``; ``(None, None)`` when absent; ``(None, why)`` when it
    cannot be read as JSON (not a regular file, too large, not UTF-8 JSON)."""
    path = out_dir / f"{name}.json"
    try:
        data = read_regular(path, MAX_RECORD_BYTES, f"{name}.json")
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, str(error)
    try:
        return json.loads(data.decode("utf-8")), None
    except ValueError as error:
        reason = getattr(error, "msg", type(error).__name__)
        return None, f"{name}.json is not valid JSON ({reason})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_probability(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )


def _is_disagreement(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 2.0


def _class_rows(rows: Any, what: str, classes: Sequence[str] | None) -> str | None:
    if not isinstance(rows, list) or not rows:
        return f"{what} is not a non-empty list"
    for row in rows:
        if not isinstance(row, dict):
            return f"{what} holds a {type(row).__name__}, not an object"
        index, name = row.get("class_index"), row.get("class_name")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            return f"{what}: class_index {index!r} is not a class index"
        if name != class_name(classes, index):
            return f"{what}: class_name {name!r} is not that of class {index}"
        if not _is_probability(row.get("probability")):
            return f"{what}: probability {row.get('probability')!r} is not a number in [0, 1]"
    return None


def expected_files(name: str, settings: Settings, labels: Sequence[str]) -> dict[str, Any]:
    """The ``files`` entry gradcampp writes in the record of image ``name`` (``labels``: the
    explained class names)."""
    files = result_file_names(
        name,
        settings.methods,
        labels if settings.top_k else None,
        pictures=settings.pictures,
    )
    overlays = {
        m: (files[m]["overlays"] if settings.top_k else files[m]["overlays"][0])
        if settings.overlays
        else None
        for m in settings.methods
    }
    maps = {m: files[m]["map"] for m in settings.methods} if settings.format == "files" else {}
    return {
        "input": files["input"] if settings.overlays else None,
        "overlays": overlays,
        "maps": maps,
    }


def npy_problem(path: Path, spatial: Sequence[int], maps: int | None) -> str | None:
    """Why the map file ``path`` is not whole, or None: a regular ``.npy`` file of floats shaped
    ``spatial`` (``maps`` None) or ``(maps, *spatial)`` (plain, or float16 values with a scale
    per map, ``gradcampp.maps``), exactly as long as its header says."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # checked before opening: a pipe would block
            return f"{path.name} is not a regular file"
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(file)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(file)
            offset = file.tell()
    except (OSError, ValueError) as error:
        return f"{path.name} is not a .npy file ({error})"
    expected = tuple(spatial) if maps is None else (maps, *spatial)
    if dtype.names == ("scale", "values"):  # float16 maps with their scales (gradcampp.maps)
        whole = (*tuple(shape), *dtype["values"].shape)
        floats = dtype["scale"].kind == "f" and dtype["values"].base.kind == "f"
    else:
        whole, floats = tuple(shape), dtype.kind == "f"
    if not floats or whole != expected:
        return f"{path.name} holds {dtype} {whole}, not floats of shape {expected}"
    if info.st_size != offset + int(np.prod(shape)) * dtype.itemsize:
        return f"{path.name} is truncated or padded ({info.st_size} bytes)"
    return None


def picture_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole picture of gradcampp's (PNG or JPEG, by its suffix), or None."""
    head, end = PICTURE_BOUNDS[path.suffix]
    kind = "PNG" if path.suffix == ".png" else "JPEG"
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size < len(head) + len(end):
            return f"{path.name} is not a whole {kind} file"
        with open(path, "rb") as file:
            start = file.read(len(head))
            file.seek(-len(end), os.SEEK_END)
            tail = file.read()
    except OSError as error:
        return f"{path.name} cannot be read ({error.strerror or error})"
    if start != head or tail != end:
        return f"{path.name} is not a whole {kind} file"
    return None


def record_problem(
    record: Any,
    out_dir: Path,
    *,
    name: str,
    input_text: str,
    loaded: LoadedModel,
    settings: Settings,
) -> str | None:
    """Why ``record`` cannot be trusted as image ``name``'s (module docstring), or None."""
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not an object"
    if set(record) != RECORD_KEYS:
        odd = sorted(set(record) ^ RECORD_KEYS)
        return "keys missing or unknown: " + ", ".join(map(repr, odd))
    if record["name"] != name:
        return f"name {record['name']!r} is not {name!r}"
    if record["input"] != input_text:
        return f"input {record['input']!r} is not {input_text!r}"
    if record["model"] != loaded.description:
        return f"model {record['model']!r} is not {loaded.description!r}"
    if not (record["layer"] is None or isinstance(record["layer"], str)):
        return "layer is neither text nor null"
    size = list(loaded.preprocess.size)
    if record["size"] != size:
        return f"size {record['size']!r} is not {size}"
    classes = loaded.classes
    top, explained = record["top_classes"], record["explained"]
    problem = _class_rows(top, "top_classes", classes) or _class_rows(
        explained, "explained", classes
    )
    if problem:
        return problem
    both = len(settings.methods) > 1
    for row in explained:  # with both methods, 1 - r of the two maps (gradcampp.disagreement)
        if ("disagreement" in row) != both:
            return "explained: disagreement " + ("missing" if both else "given for one method")
        if both and not (row["disagreement"] is None or _is_disagreement(row["disagreement"])):
            return f"explained: disagreement {row['disagreement']!r} is not a number in [0, 2]"
    if [row.get("rank") for row in top] != list(range(1, len(top) + 1)) or len(
        top
    ) > settings.show_top:
        return f"top_classes are not ranked 1 to n <= {settings.show_top}"
    probabilities = [row["probability"] for row in top]
    if probabilities != sorted(probabilities, reverse=True):
        return "top_classes are not in decreasing probability"
    indices = [row["class_index"] for row in explained]
    ranked = [row["class_index"] for row in top]
    if settings.target is not None:
        fits = indices == [settings.target]
    else:  # the most probable class, or the top_k most probable (top_classes may list fewer)
        count = settings.top_k or 1
        fits = len(indices) == count and indices[: len(ranked)] == ranked[:count]
    if not fits:
        return f"explained classes {indices} are not the ones the settings ask for"
    labels = [row["class_name"] for row in explained]
    files = expected_files(name, settings, labels)
    if record["files"] != files:
        return "files are not the ones gradcampp writes for it"
    for method, file in files["maps"].items():
        problem = npy_problem(out_dir / file, size, len(labels) if settings.top_k else None)
        if problem:
            return f"map {method}: {problem}"
    pictures = [files["input"]] if files["input"] else []
    for value in files["overlays"].values():
        if value is not None:
            pictures.extend(value if isinstance(value, list) else [value])
    for picture in pictures:
        problem = picture_problem(out_dir / picture)
        if problem:
            return problem
    return None
