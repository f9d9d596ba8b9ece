"""The command line keeps TensorFlow's C++ start-up logs (CUDA, CPU features) off the terminal."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from gradcampp.cli import EXIT_OK, main

# TensorFlow's C++ log lines: "2026-11-29 16:45:56.411770: I external/.../cudart_stub.cc:31] ..."
TF_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ", re.M)

MODEL_MODULE = """
def build():
    import keras  # imported by the command, after it has set up the environment

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
"""


def test_the_log_level_is_set_unless_the_user_chose_one(monkeypatch, capsys):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert main(["--help"]) == EXIT_OK
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert main(["--help"]) == EXIT_OK
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's choice is kept
    capsys.readouterr()


def test_the_pattern_matches_tensorflow_log_lines():
    line = "2026-11-29 16:45:56.411770: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:31] x"
    assert TF_LOG_LINE.search(f"first line\n{line}\n")
    assert not TF_LOG_LINE.search("wrote 1 image to out/\n")


@pytest.mark.slow
def test_explaining_a_keras_model_prints_no_tensorflow_logs(tmp_path):
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
        pytest.skip("keras/tensorflow are not installed")
    Image = pytest.importorskip("PIL.Image")
    pytest.importorskip("matplotlib")
    (tmp_path / "tiny_keras_model.py").write_text(MODEL_MODULE)
    pixels = (np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "leaf.png")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *filter(None, [env.get("PYTHONPATH")])])
    env["KERAS_BACKEND"] = "tensorflow"
    command = [sys.executable, "-m", "gradcampp", "explain", str(tmp_path / "leaf.png")]
    command += ["--model", "tiny_keras_model:build", "--out", str(tmp_path / "out"), "-q"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert (tmp_path / "out" / "leaf.gradcampp.npy").exists()
    assert TF_LOG_LINE.findall(done.stderr) == []
    assert "cuda" not in done.stderr.lower()
