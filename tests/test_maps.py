"""Stored maps: float16 values with a float32 scale per map, or float32 byte for byte."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from gradcampp.maps import from_half, half_with_scale, load_map, pack, save_map, unpack


def smooth_maps(t: int, peak: float, seed: int = 0) -> np.ndarray:
    """``t`` non-negative maps ``(t, 56, 48)`` whose maximum is ``peak`` (float32)."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 3.0, 56)[:, None] + np.linspace(0.0, 2.0, 48)[None, :]
    maps = np.stack([np.maximum(np.sin(grid * (k + 1) + rng.random()), 0) for k in range(t)])
    maps = maps / maps.max(axis=(1, 2), keepdims=True)
    maps[:, 0, 0] = 1.0
    return (maps * peak).astype(np.float32)


@pytest.mark.parametrize("peak", [1e-11, 3.7e-6, 1.0, 2.5e4, 1e30])
def test_half_storage_error_below_a_thousandth_of_each_maps_maximum(tmp_path, peak):
    maps = smooth_maps(3, peak)
    maps[1] *= 1e-3  # maps of one file may differ in scale: each has its own
    save_map(tmp_path / "m.npy", maps)
    back = load_map(tmp_path / "m.npy")
    assert back.dtype == np.float32 and back.shape == maps.shape
    for stored, original in zip(back, maps, strict=True):
        top = float(original.max())
        error = float(np.abs(stored.astype(np.float64) - original).max())
        assert error <= (2.0**-12 + 2.0**-22) * top  # half a float16 step, float32 rounding
        assert error < 1e-3 * top
        assert np.isfinite(stored).all() and stored.max() > 0


def test_half_storage_takes_half_the_bytes_and_float32_keeps_todays(tmp_path):
    one = smooth_maps(1, 0.73)[0]  # (56, 48), as written for one explained class
    save_map(tmp_path / "half.npy", one)
    save_map(tmp_path / "full.npy", one, "float32")
    today = io.BytesIO()
    np.save(today, one)  # how maps were written before float16 storage
    assert (tmp_path / "full.npy").read_bytes() == today.getvalue()
    half, full = (tmp_path / "half.npy").stat().st_size, (tmp_path / "full.npy").stat().st_size
    assert half == 128 + (full - 128) // 2 + 4  # a 128-byte header, half the values, a scale
    stored = np.load(tmp_path / "half.npy", allow_pickle=False)  # NumPy alone reads it
    assert stored.shape == () and stored.dtype.names == ("scale", "values")
    manual = stored["values"].astype(np.float32) * stored["scale"][..., None, None]
    np.testing.assert_array_equal(manual, load_map(tmp_path / "half.npy"))
    np.testing.assert_array_equal(load_map(tmp_path / "full.npy"), one)


def test_zero_maps_and_bad_input():
    zeros = np.zeros((2, 4, 5), np.float32)
    values, scale = half_with_scale(zeros)
    assert scale.tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(from_half(values, scale), zeros)
    np.testing.assert_array_equal(unpack(pack(zeros)), zeros)
    with pytest.raises(ValueError, match="NaN or Inf"):
        pack(np.full((3, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="map_dtype must be one of"):
        pack(zeros, "bfloat16")
    with pytest.raises(ValueError, match="not a stored map"):
        unpack(np.arange(6).reshape(2, 3))


def test_command_line_map_dtypes(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from PIL import Image

    from gradcampp.cli import EXIT_OK, main

    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(images / f"{i}.png")
    runs = {}
    for dtype in ("float16", "float32"):
        out = tmp_path / dtype
        argv = ["explain", str(images), "--model", "demo", "--out", str(out), "-q", "--top-k", "2"]
        assert main([*argv, "--map-dtype", dtype]) == EXIT_OK
        runs[dtype] = out
    for i in range(2):
        full = runs["float32"] / f"{i}.gradcampp.npy"
        half = runs["float16"] / f"{i}.gradcampp.npy"
        plain = np.load(full, allow_pickle=False)
        assert plain.dtype == np.float32 and plain.shape == (2, 64, 64)
        back = load_map(half)
        for t in range(2):
            assert np.abs(back[t] - plain[t]).max() <= (2.0**-12 + 2.0**-22) * float(plain[t].max())
        # half the values, two 4-byte scales, a header of at most 192 bytes (128 for float32)
        assert half.stat().st_size <= 192 + (full.stat().st_size - 128) // 2 + 2 * 4
        record = json.loads((runs["float16"] / f"{i}.json").read_text())
        assert record["files"]["maps"] == {"gradcampp": f"{i}.gradcampp.npy"}
    run_file = json.loads((runs["float32"] / ".gradcampp-run").read_text())
    assert run_file["map_dtype"] == "float32"
    assert json.loads((runs["float16"] / ".gradcampp-run").read_text())["map_dtype"] == "float16"


def test_parquet_map_dtypes(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from gradcampp.parquet import map_of, schema, write_part
    from gradcampp.stages.settings import Settings

    maps = {"gradcampp": smooth_maps(2, 1e30), "gradcam": smooth_maps(2, 1e-11, seed=1)}
    record = {
        "name": "a",
        "input": "a.png",
        "model": "m",
        "layer": "l",
        "size": [56, 48],
        "top_classes": [{"class_index": 1, "class_name": "x", "probability": 0.5}],
        "explained": [
            {"class_index": 1, "class_name": "x", "probability": 0.5},
            {"class_index": 2, "class_name": "y", "probability": 0.25},
        ],
    }
    tables = {}
    for dtype in ("float16", "float32"):
        settings = Settings(methods=("gradcampp", "gradcam"), top_k=2, map_dtype=dtype)
        write_part(tmp_path / dtype / "part.parquet", [(record, maps)], settings)
        tables[dtype] = pq.read_table(tmp_path / dtype / "part.parquet")
        assert tables[dtype].schema.equals(schema(settings))
    assert "gradcampp_scale" not in tables["float32"].column_names
    assert str(tables["float16"].schema.field("gradcampp").type) == "list<element: halffloat>"
    full = tables["float32"].to_pylist()[0]
    half = tables["float16"].to_pylist()[0]
    for method, original in maps.items():
        np.testing.assert_array_equal(map_of(full, method), original)
        back = map_of(half, method)
        assert back.shape == original.shape == (2, 56, 48)
        top = original.max(axis=(1, 2), keepdims=True)
        assert (np.abs(back.astype(np.float64) - original) <= (2.0**-12 + 2.0**-22) * top).all()
