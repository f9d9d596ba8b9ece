"""``gradcampp explain --model FILE.keras``: loading and dispatch of saved Keras models.

Runs in a child process (TensorFlow and PyTorch loaded into one process can crash each other). The
end-to-end check needs a Keras backend in ``gradcampp.backends``; without one, the command must
say clearly that it cannot explain the model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("matplotlib")
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
    pytest.skip("keras/tensorflow are not installed", allow_module_level=True)

from PIL import Image

from gradcampp.maps import load_map

pytestmark = pytest.mark.slow

SCRIPT = """
import os, sys
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras
from gradcampp.backends import backend_for
from gradcampp.cli import main

keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((20, 24, 3)),
    keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv"),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(3, name="logits"),
])
path = os.path.join(sys.argv[1], "tiny.keras")
model.save(path)
try:
    backend_for(model)
    supported = True
except TypeError:
    supported = False
code = main(["explain", sys.argv[2], "--model", path, "--out", sys.argv[3], "-q"])
print("RESULT", supported, code)
"""


def test_keras_file_is_loaded_and_explained_or_refused_clearly(tmp_path):
    from gradcampp.cli import EXIT_MODEL, EXIT_OK

    image = tmp_path / "leaf.png"
    Image.fromarray((np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)).save(
        image
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(image), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, result.stderr[-3000:]
    _, supported, code = lines[-1].split()
    if supported == "False":
        assert int(code) == EXIT_MODEL
        assert "cannot explain this model" in result.stderr
        pytest.skip("gradcampp.backends has no Keras backend yet; the refusal is clear")
    assert int(code) == EXIT_OK, result.stderr[-3000:]
    raw = load_map(out / "leaf.gradcampp.npy")
    assert raw.shape == (20, 24)  # the model's input size, read from the .keras file
    record = json.loads((out / "leaf.json").read_text())
    assert len(record["top_classes"]) == 3
    assert record["explained"][0]["class_index"] == record["top_classes"][0]["class_index"]
    assert record["layer"] == "conv"  # the explained layer is named, as for PyTorch models
    assert "Explained layer: conv" in (out / "index.html").read_text()


EXPLAIN_ON = """
import sys
from gradcampp.cli import main

code = main(["explain", sys.argv[2], "--model", sys.argv[1], "--out", sys.argv[3], "-q"])
print("RESULT", code)
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_keras_file_gives_the_same_maps_on_every_keras_backend(tmp_path, backend):
    """The same ``.keras`` file explained from the command line under ``KERAS_BACKEND=jax`` or
    ``torch`` gives TensorFlow's record and maps (float32 rounding apart)."""
    pytest.importorskip(backend)
    from gradcampp.cli import EXIT_OK

    image = tmp_path / "leaf.png"
    pixels = np.random.default_rng(0).random((40, 30, 3)) * 255
    Image.fromarray(pixels.astype(np.uint8)).save(image)
    runs = {}
    for name, script, args in (
        ("tensorflow", SCRIPT, [str(tmp_path), str(image)]),  # saves tmp_path / "tiny.keras"
        (backend, EXPLAIN_ON, [str(tmp_path / "tiny.keras"), str(image)]),
    ):
        runs[name] = tmp_path / f"out-{name}"
        result = subprocess.run(
            [sys.executable, "-c", script, *args, str(runs[name])],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={**os.environ, "KERAS_BACKEND": name},
        )
        assert result.stdout.split()[-1] == str(EXIT_OK), result.stderr[-3000:]
    expected = load_map(runs["tensorflow"] / "leaf.gradcampp.npy")
    found = load_map(runs[backend] / "leaf.gradcampp.npy")
    assert expected.shape == found.shape == (20, 24) and expected.max() > 0
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-3 * float(expected.max()))
    records = [json.loads((runs[n] / "leaf.json").read_text()) for n in ("tensorflow", backend)]
    for record in records:
        for row in record["top_classes"] + record["explained"]:
            row["probability"] = round(row["probability"], 5)
    assert records[0] == records[1]
