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
- ``explained_disagreement`` (list<float64>, only when both methods run): per explained class,
  ``1 - r``, ``r`` the Pearson correlation of the two methods' maps (``gradcampp.disagreement``;
  null where a map is constant), computed on the maps the overlays show.
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

A file dropped into the folder that is not a part file makes ``read_table`` on the folder fail
(pyarrow reads every file whose name does not start with ``.`` or ``_``); ``read_dataset(out)``
reads the part files only, whatever else lies there.

The maps are at the explained layer's resolution (``h, w``: e.g. 7x7 for ResNet-50 at 224 px),
the form to store and to upsample later with ``gradcampp.resize.resize`` (bicubic, then clip at
zero: ``gradcampp.engines.work.upsample``); with ``--full-size`` they are at the input's
resolution, equal to the ``.npy`` maps of ``--format files``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp._files import write_atomically
from gradcampp.engines.work import Settings
from gradcampp.maps import from_half, half_with_scale
from gradcampp.out_folder import DATASET, is_temporary_name

__all__ = ["DATASET", "map_of", "read_dataset", "read_records", "schema", "write_part"]
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:  # pragma: no cover - exercised only without pyarrow
        raise ImportError(
            "--format parquet needs pyarrow: pip install pyarrow (or "
            'pip install ".[ray]" in a gradcampp checkout)'
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


def compares(settings: Settings) -> bool:
    """Whether the run explains with both Grad-CAM++ and Grad-CAM (and so records how much
    their maps disagree)."""
    return {"gradcampp", "gradcam"} <= set(settings.methods)


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
    if compares(settings):
        fields.append(("explained_disagreement", pa.list_(pa.float64())))
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
        if compares(settings):
            values["explained_disagreement"] = [e.get("disagreement") for e in explained]
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
    from gradcampp.engines.run_file import expected_files

    return expected_files(name, settings, labels)


def part_files(out_dir: Path) -> list[Path]:
    """The part files of ``out_dir``'s dataset, in name order (regular files only)."""
    folder = out_dir / DATASET
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(
        folder / name
        for name in os.listdir(folder)
        if name.startswith(PART_PREFIX)
        and name.endswith(PART_SUFFIX)
        and (folder / name).is_file()
        and not (folder / name).is_symlink()
    )


def stray_files(out_dir: Path) -> list[str]:
    """Names in the dataset folder that are neither part files nor temporaries (pyarrow would
    try to read them as Parquet unless they start with ``.`` or ``_``)."""
    folder = out_dir / DATASET
    if not folder.is_dir() or folder.is_symlink():
        return []
    parts = {path.name for path in part_files(out_dir)}
    return sorted(
        name
        for name in os.listdir(folder)
        if name not in parts and not is_temporary_name(name) and not name.startswith((".", "_"))
    )


def read_dataset(out_dir: str | os.PathLike[str], columns: Sequence[str] | None = None) -> Any:
    """The dataset of ``out_dir`` as one ``pyarrow.Table``, read from its part files only.

    Args:
        out_dir: the output folder of a ``--format parquet`` run (holding
            ``explanations.parquet``).
        columns: the columns to read (default: all).

    Raises:
        FileNotFoundError: when the folder holds no part file.
    """
    pa = _pyarrow()
    parts = part_files(Path(out_dir))
    if not parts:
        raise FileNotFoundError(f"no part file in {Path(out_dir) / DATASET}")
    tables = [pa.parquet.read_table(part, columns=columns) for part in parts]
    return pa.concat_tables(tables)


def map_of(row: dict[str, Any], method: str) -> np.ndarray:
    """The ``method`` map of a row (a dict, e.g. from ``table.to_pylist()``), float32, shaped as
    stored: ``(h, w)``, or ``(T, h, w)`` with ``--top-k`` (float16 values times their scale)."""
    shape = [int(n) for n in row["map_shape"]]
    scales = row.get(scale_column(method))
    if scales is None:
        return np.asarray(row[method], dtype=np.float32).reshape(shape)
    values = np.asarray(row[method], dtype=np.float16).reshape(-1, *shape[-2:])
    return from_half(values, np.asarray(scales, dtype=np.float32)).reshape(shape)


def read_part_records(part: Path, settings: Settings) -> list[dict[str, Any]]:
    """The records (as in ``NAME.json``) of the rows of one part file, maps left out.

    Raises:
        OSError, pyarrow.ArrowException: when the file is not a part file of this schema.
    """
    pa = _pyarrow()
    leave_out = {*map_columns(settings), "map_shape"}
    keep = [n for n in schema(settings).names if n not in leave_out]
    rows = pa.parquet.read_table(part, columns=keep).to_pylist()
    return [_record(row, settings) for row in rows]


def read_records(out_dir: Path, settings: Settings) -> list[dict[str, Any]]:
    """The records of every readable part file of ``out_dir``'s dataset (others left out)."""
    pa = _pyarrow()
    records = []
    for part in part_files(out_dir):
        try:
            records.extend(read_part_records(part, settings))
        except (OSError, ValueError, TypeError, pa.ArrowException):
            continue
    return records


def _record(row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    explained = [
        {"class_index": i, "class_name": n, "probability": p}
        for i, n, p in zip(
            row["explained_class_index"] or [],
            row["explained_class_name"] or [],
            row["explained_probability"] or [],
            strict=True,
        )
    ]
    for entry, value in zip(explained, row.get("explained_disagreement") or [], strict=False):
        entry["disagreement"] = value
    return {
        "input": row["input"],
        "name": row["name"],
        "model": row["model"],
        "layer": row["layer"],
        "size": [row["height"], row["width"]],
        "top_classes": [
            {"rank": r + 1, "class_index": i, "class_name": n, "probability": p}
            for r, (i, n, p) in enumerate(
                zip(
                    row["top_class_index"] or [],
                    row["top_class_name"] or [],
                    row["top_probability"] or [],
                    strict=True,
                )
            )
        ],
        "explained": explained,
        "files": record_files(
            str(row["name"]), settings, [str(e["class_name"]) for e in explained]
        ),
    }
