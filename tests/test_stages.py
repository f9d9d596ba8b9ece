"""The three stages on their own: read -> explain -> write give what the local engine writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from gradcampp.demo import generate_shapes
from gradcampp.engines.local import run_local
from gradcampp.engines.run import RunOptions
from gradcampp.images import save_png
from gradcampp.model_specs import load_model
from gradcampp.stages.explain import ExplainStage, explanation_columns
from gradcampp.stages.read import read_group
from gradcampp.stages.settings import Settings
from gradcampp.stages.write import write_group


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage-inputs")
    batch = generate_shapes(3, seed=2)
    paths = []
    for i, image in enumerate(batch.images):
        paths.append(folder / f"img-{i}.png")
        save_png(paths[-1], np.moveaxis(image, 0, -1))
    broken = folder / "broken.png"
    broken.write_bytes(b"not a picture")
    return [*paths[:2], broken, paths[2]]


def test_read_gives_views_and_a_skip_record(inputs):
    loaded = load_model("demo")
    items = [(path, path.stem) for path in inputs]
    views, skipped = read_group(items, loaded.preprocess)
    assert [name for _, name, _ in views] == ["img-0", "img-1", "img-2"]
    assert all(view.dtype == np.uint8 and view.shape == (64, 64, 3) for _, _, view in views)
    assert len(skipped) == 1 and skipped[0][0] == str(inputs[2])
    assert skipped[0][1]  # the reason, in words


def test_the_stages_chained_by_hand_write_what_the_local_engine_writes(inputs, tmp_path):
    loaded = load_model("demo")
    settings = Settings(methods=("gradcampp", "gradcam"), batch_size=4, map_dtype="float32")
    engine_out = tmp_path / "engine"
    result = run_local(loaded, inputs, engine_out, settings, RunOptions(progress=False))
    assert [r["name"] for r in result.records] == ["img-0", "img-1", "img-2"]
    assert [s[0] for s in result.skipped] == [str(inputs[2])]

    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    explain = ExplainStage(loaded, settings)
    views, _ = read_group([(p, p.stem) for p in inputs], loaded.preprocess)
    found = explain([view for _, _, view in views])
    done = write_group(views, found, by_hand, settings, loaded=loaded, layer=explain.layer)
    assert done.skipped == []
    assert done.records == result.records
    for record in done.records:
        for method in settings.methods:
            npy = record["files"]["maps"][method]
            assert (by_hand / npy).read_bytes() == (engine_out / npy).read_bytes()
        assert json.loads((by_hand / f"{record['name']}.json").read_text()) == record


def test_explanation_columns_hold_each_image_and_class(inputs):
    loaded = load_model("demo")
    settings = Settings(top_k=2, show_top=3)
    views, _ = read_group([(p, p.stem) for p in inputs], loaded.preprocess)
    found = ExplainStage(loaded, settings)([view for _, _, view in views])
    columns = explanation_columns(found, settings)
    assert columns["class_index"].shape == (3, 2)
    assert columns["top_class_index"].shape == (3, 3)
    np.testing.assert_array_equal(columns["class_index"], columns["top_class_index"][:, :2])
    assert columns["gradcampp"].shape == (3, 2, 64, 64)
    for i, item in enumerate(found):
        assert not isinstance(item, str)
        np.testing.assert_array_equal(columns["probability"][i], item.probs[item.explained])
        np.testing.assert_array_equal(columns["gradcampp"][i], item.maps["gradcampp"])


def test_the_ray_stage_functions_chained_in_this_process_write_what_the_local_engine_writes(
    inputs, tmp_path
):
    from gradcampp.engines.ray_stages import (
        GROUP_COLUMNS,
        ExplainActor,
        FusedActor,
        cells,
        read_stage,
        write_stage,
    )
    from gradcampp.recipe import ModelRecipe

    loaded = load_model("demo")
    settings = Settings(methods=("gradcampp", "gradcam"), batch_size=4, map_dtype="float32")
    engine_out = tmp_path / "engine"
    result = run_local(loaded, inputs, engine_out, settings, RunOptions(progress=False))
    staged = tmp_path / "staged"
    staged.mkdir()
    row = {"group": 0, "indices": [0, 1, 2, 3], "files": [str(p) for p in inputs]}
    row["names"] = [p.stem for p in inputs]
    batch = {key: cells([row[key]]) for key in GROUP_COLUMNS}
    read = read_stage(batch, preprocess=loaded.preprocess)
    assert read["views"][0].shape == (3, 64, 64, 3) and read["error"][0] == ""
    explained = ExplainActor(ModelRecipe("demo"), settings)(read)
    assert list(explained["failed"][0]) == ["", "", ""]
    out = write_stage(
        explained, loaded=loaded, settings=settings, out_dir=str(staged), run_id="run"
    )
    assert list(out["status"]) == ["done", "done", "done", "skipped"]
    assert list(out["index"]) == [0, 1, 3, 2]
    assert out["payload"][3] == result.skipped[0][1]
    assert [json.loads(text) for text in out["payload"][:3]] == result.records
    for record in result.records:
        for method in settings.methods:
            npy = record["files"]["maps"][method]
            assert (staged / npy).read_bytes() == (engine_out / npy).read_bytes()
    # the fused layout's actor: the same three functions in one call, the same rows and files
    fused = tmp_path / "fused"
    fused.mkdir()
    rows = FusedActor(ModelRecipe("demo"), settings, str(fused), "run")(batch)
    for key in ("index", "status", "payload"):
        assert list(rows[key]) == list(out[key])
    written = sorted(p.name for p in staged.iterdir())
    assert sorted(p.name for p in fused.iterdir()) == written and len(written) > 3
    for name in written:
        assert (fused / name).read_bytes() == (staged / name).read_bytes()


def test_packed_explanations_come_back_as_they_went_with_the_failures_in_place(inputs):
    from gradcampp.engines.ray_stages import pack_explanations, unpack_explanations

    loaded = load_model("demo")
    settings = Settings(methods=("gradcampp", "gradcam"), top_k=2)
    views, _ = read_group([(p, p.stem) for p in inputs], loaded.preprocess)
    found = ExplainStage(loaded, settings)([view for _, _, view in views])
    mixed = [found[0], "the model failed on it (ValueError: bad)", found[2]]
    back = unpack_explanations(pack_explanations(mixed))
    assert back[1] == mixed[1]
    for got, want in ((back[0], found[0]), (back[2], found[2])):
        assert not isinstance(got, str) and not isinstance(want, str)
        np.testing.assert_array_equal(got.probs, want.probs)
        np.testing.assert_array_equal(got.order, want.order)
        np.testing.assert_array_equal(got.explained, want.explained)
        assert sorted(got.maps) == ["gradcam", "gradcampp"]
        for method in got.maps:
            assert got.maps[method].dtype == np.float32
            np.testing.assert_array_equal(got.maps[method], want.maps[method])
    assert unpack_explanations(pack_explanations(["no", "maybe"])) == ["no", "maybe"]
