"""``--format parquet``: the maps and predictions of a run as one Parquet dataset.

The dataset is the directory ``explanations.parquet`` in the output directory: one part file
``part-<run>-<group>.parquet`` per group of images a worker explained (renamed into place when
complete, so a part file that exists is whole), one row per image. Read it with
``pyarrow.parquet.read_table(out / "explanations.parquet")`` or ``pandas.read_parquet``.

Columns (one row per image):

- ``name`` (string): the image's unique name in the run; ``input`` (string): the input file,
  relative to the output directory;
  ``model`` (string): the model's description; ``layer`` (string, null if unknown): the
  explained layer; ``height``, ``width`` (int32): the image's size as the model saw it.
- ``top_class_index`` (list<int64>), ``top_class_name`` (list<string>), ``top_probability``
  (list<float64>): the most probable classes, best first.
- ``explained_class_index``, ``explained_class_name``, ``explained_probability``: the ``T``
  explained classes, same types.
- ``map_shape`` (list<int32>): the shape of each map, ``[h, w]``, or ``[T, h, w]`` with
  ``--top-k``.
- one column per method of the run, ``gradcampp`` and/or ``gradcam``: the map, row-major. By
  default (``--map-dtype float16``) it is list<float16> of the map divided by its scale, and a
  column ``<method>_scale`` (list<float32>, one scale per map: ``T`` with ``--top-k``, else 1)
  holds ``scale = max |map|``: the map is ``float32(values) * scale``, within ``2**-12`` of its
  maximum (``gradcampp.maps``). With ``--map-dtype float32`` the column is list<float32> of the
  map itself and there is no scale column. ``map_of(row, method)`` gives the float32 map in its
  shape either way:

      import pyarrow.parquet as pq
      from gradcampp.engines.parquet import map_of

      row = pq.read_table("out/explanations.parquet").to_pylist()[0]
      small = map_of(row, "gradcampp")  # float32, shape row["map_shape"]

The maps are at the explained layer's resolution (``h, w``: e.g. 7x7 for ResNet-50 at 224 px),
the form to store and to upsample later with ``gradcampp.resize.resize`` (bicubic, then clip at
zero: ``gradcampp.engines.work.upsample``); with ``--full-size`` they are at the input's
resolution, equal to the ``.npy`` maps of ``--format files``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp._files import write_atomically
from gradcampp.engines.work import Settings
from gradcampp.maps import from_half, half_with_scale
from gradcampp.pipeline import result_file_names

DATASET = "explanations.parquet"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:  # pragma: no cover - exercised only without pyarrow
        raise ImportError(
            '--format parquet needs pyarrow: pip install pyarrow (or "gradcampp[ray]")'
        ) from error
    return pyarrow


def part_path(out_dir: Path, run_id: str, group: int) -> Path:
    """The part file of group ``group`` of run ``run_id``."""
    return out_dir / DATASET / f"part-{run_id}-{group:06d}.parquet"


def scale_column(method: str) -> str:
    """The column of ``method``'s per-map scales (float16 maps only)."""
    return f"{method}_scale"


def map_columns(settings: Settings) -> list[str]:
    """The columns that hold maps: one per method, and its scales with float16 maps."""
    columns = list(settings.methods)
    if settings.map_dtype == "float16":
        columns += [scale_column(method) for method in settings.methods]
    return columns


def schema(settings: Settings) -> Any:
    """The ``pyarrow.Schema`` of the dataset (see the module docstring)."""
    pa = _pyarrow()
    fields = [
        ("name", pa.string()),
        ("input", pa.string()),
        ("model", pa.string()),
        ("layer", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("top_class_index", pa.list_(pa.int64())),
        ("top_class_name", pa.list_(pa.string())),
        ("top_probability", pa.list_(pa.float64())),
        ("explained_class_index", pa.list_(pa.int64())),
        ("explained_class_name", pa.list_(pa.string())),
        ("explained_probability", pa.list_(pa.float64())),
        ("map_shape", pa.list_(pa.int32())),
    ]
    if settings.map_dtype == "float32":
        fields += [(method, pa.list_(pa.float32())) for method in settings.methods]
    else:
        fields += [(method, pa.list_(pa.float16())) for method in settings.methods]
        fields += [(scale_column(method), pa.list_(pa.float32())) for method in settings.methods]
    return pa.schema(fields)


def write_part(
    path: Path,
    rows: Sequence[tuple[dict[str, Any], dict[str, np.ndarray]]],
    settings: Settings,
) -> None:
    """Write one part file: a row per ``(record, {method: map (T, h, w)})``, atomically."""
    pa = _pyarrow()
    columns: dict[str, list[Any]] = {name: [] for name in schema(settings).names}
    for record, maps in rows:
        top, explained = record["top_classes"], record["explained"]
        values = {
            "name": record["name"],
            "input": record["input"],
            "model": record["model"],
            "layer": record["layer"],
            "height": record["size"][0],
            "width": record["size"][1],
            "top_class_index": [t["class_index"] for t in top],
            "top_class_name": [t["class_name"] for t in top],
            "top_probability": [t["probability"] for t in top],
            "explained_class_index": [e["class_index"] for e in explained],
            "explained_class_name": [e["class_name"] for e in explained],
            "explained_probability": [e["probability"] for e in explained],
        }
        first = maps[settings.methods[0]]
        shape = first.shape if settings.top_k else first.shape[1:]
        values["map_shape"] = list(shape)
        for method in settings.methods:
            array = np.ascontiguousarray(maps[method], dtype=np.float32)  # (T, h, w)
            if settings.map_dtype == "float32":
                values[method] = array.ravel()
            else:
                half, scale = half_with_scale(array)
                values[method] = half.ravel()
                values[scale_column(method)] = scale.ravel()
        for key, value in values.items():
            columns[key].append(value)
    table = pa.table(columns, schema=schema(settings))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: pa.parquet.write_table(table, file))


def record_files(name: str, settings: Settings, labels: Sequence[str]) -> dict[str, Any]:
    """The ``files`` entry of a record stored in Parquet: its pictures, no per-image files."""
    files = result_file_names(name, settings.methods, labels if settings.top_k else None)
    overlays = {
        m: (files[m]["overlays"] if settings.top_k else files[m]["overlays"][0])
        if settings.overlays
        else None
        for m in settings.methods
    }
    return {
        "input": files["input"] if settings.overlays else None,
        "overlays": overlays,
        "maps": {},
    }


def map_of(row: dict[str, Any], method: str) -> np.ndarray:
    """The ``method`` map of a row (a dict, e.g. from ``table.to_pylist()``), float32, shaped as
    stored: ``(h, w)``, or ``(T, h, w)`` with ``--top-k`` (float16 values times their scale)."""
    shape = [int(n) for n in row["map_shape"]]
    scales = row.get(scale_column(method))
    if scales is None:
        return np.asarray(row[method], dtype=np.float32).reshape(shape)
    values = np.asarray(row[method], dtype=np.float16).reshape(-1, *shape[-2:])
    return from_half(values, np.asarray(scales, dtype=np.float32)).reshape(shape)


def read_records(out_dir: Path, settings: Settings) -> list[dict[str, Any]]:
    """The records (as in ``NAME.json``) of every row in ``out_dir``'s dataset, maps left out."""
    pa = _pyarrow()
    folder = out_dir / DATASET
    parts = sorted(p for p in folder.glob("part-*.parquet")) if folder.is_dir() else []
    records = []
    leave_out = {*map_columns(settings), "map_shape"}
    keep = [n for n in schema(settings).names if n not in leave_out]
    for part in parts:
        try:
            rows = pa.parquet.read_table(part, columns=keep).to_pylist()
        except (OSError, pa.ArrowException):
            continue  # not a part file of this run's schema: explain its images again
        for row in rows:
            explained = [
                {"class_index": i, "class_name": n, "probability": p}
                for i, n, p in zip(
                    row["explained_class_index"],
                    row["explained_class_name"],
                    row["explained_probability"],
                    strict=True,
                )
            ]
            records.append(
                {
                    "input": row["input"],
                    "name": row["name"],
                    "model": row["model"],
                    "layer": row["layer"],
                    "size": [row["height"], row["width"]],
                    "top_classes": [
                        {"rank": r + 1, "class_index": i, "class_name": n, "probability": p}
                        for r, (i, n, p) in enumerate(
                            zip(
                                row["top_class_index"],
                                row["top_class_name"],
                                row["top_probability"],
                                strict=True,
                            )
                        )
                    ],
                    "explained": explained,
                    "files": record_files(
                        row["name"], settings, [e["class_name"] for e in explained]
                    ),
                }
            )
    return records
