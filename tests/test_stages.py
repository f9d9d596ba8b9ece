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
