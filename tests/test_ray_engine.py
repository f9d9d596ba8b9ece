"""``--engine ray``: the local engine's outputs, resume after a killed driver, a dying worker.

One local Ray (2 CPUs) serves the whole module; the killed driver joins it with ``--address``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")

import gradcampp  # noqa: E402
import gradcampp.ray  # noqa: E402
from gradcampp.cli import EXIT_OK, main  # noqa: E402
from gradcampp.demo import generate_shapes  # noqa: E402
from gradcampp.engines.parquet import map_of  # noqa: E402
from gradcampp.engines.work import upsample  # noqa: E402
from gradcampp.images import save_png  # noqa: E402
from gradcampp.maps import load_map  # noqa: E402

pytestmark = pytest.mark.slow
N_IMAGES = 200
SRC = Path(gradcampp.__file__).resolve().parents[1]

DYING_MODEL = """
import os

from gradcampp.demo import load_demo_model

MARKER = {marker!r}
DRIVER = {driver}


def make():
    model = load_demo_model()
    forward = model.forward

    def dying_forward(x):
        # the first batch of the first worker that gets here ends its process, once per run
        if os.getpid() != DRIVER:
            try:
                handle = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(handle)
                os._exit(1)
        return forward(x)

    model.forward = dying_forward
    return model
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray_models")


@pytest.fixture(scope="module")
def cluster(models):
    """A local Ray with 2 CPUs for the module; its workers also import from ``models``."""
    path = os.pathsep.join(p for p in (str(models), str(SRC), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs") / "shapes"
    folder.mkdir()
    batch = generate_shapes(N_IMAGES, seed=5)
    for i, image in enumerate(batch.images):
        save_png(folder / f"img-{i:03d}.png", np.moveaxis(image, 0, -1))
    return folder


def explain(inputs: Path, out: Path, *extra: str) -> int:
    return main(["explain", str(inputs), "--model", "demo", "--out", str(out), "-q", *extra])


@pytest.fixture(scope="module")
def reference(shapes, tmp_path_factory) -> Path:
    """The local engine's outputs."""
    out = tmp_path_factory.mktemp("runs") / "local"
    assert explain(shapes, out) == EXIT_OK
    return out


def csv_rows(out: Path) -> list[tuple[str, ...]]:
    """``predictions.csv`` as sorted rows, probabilities as numbers, inputs resolved."""
    with open(out / "predictions.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return sorted(
        (
            r["image"],
            str((out / r["input"]).resolve()),
            r["rank"],
            r["class_index"],
            r["class_name"],
            round(float(r["probability"]), 5),
        )
        for r in rows
    )


def assert_same_outputs(out: Path, reference: Path, relative: float | None = None) -> None:
    """File for file: the same names, maps to 1e-6 (or to ``relative`` times each map's largest
    value), the same predictions and report."""
    names = sorted(p.name for p in reference.iterdir() if p.is_file())
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == names
    for npy in reference.glob("*.npy"):
        expected = load_map(npy)
        atol = 1e-6 if relative is None else relative * float(np.abs(expected).max())
        atol += 2.0**-11 * float(np.abs(expected).max())  # one float16 step (map_dtype float16)
        np.testing.assert_allclose(load_map(out / npy.name), expected, atol=atol, rtol=0)
    assert csv_rows(out) == csv_rows(reference)
    assert (out / "index.html").read_text() == (reference / "index.html").read_text()


def test_ray_two_workers_give_the_local_outputs(cluster, shapes, reference):
    out = reference.parent / "ray"  # beside the reference: the same relative input paths
    assert explain(shapes, out, "--engine", "ray", "--workers", "2") == EXIT_OK
    assert_same_outputs(out, reference)


def test_resume_after_the_driver_is_killed(cluster, shapes, reference):
    out = reference.parent / "resumed"
    command = [sys.executable, "-m", "gradcampp", "explain", str(shapes), "--model", "demo"]
    command += ["--out", str(out), "-q", "--engine", "ray", "--address", cluster]
    command += ["--workers", "2", "--batch-size", "8"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(list(out.glob("img-*.json"))) < 40:
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # Ray ends the killed driver's workers; wait until nothing is written any more
    previous, stable_since = None, time.monotonic()
    while time.monotonic() - stable_since < 5:
        now = sorted(p.name for p in out.iterdir())
        if now != previous:
            previous, stable_since = now, time.monotonic()
        time.sleep(0.5)
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("img-*.json")}
    assert 40 <= len(done) < N_IMAGES  # stopped part-way
    result = gradcampp.ray.explain_files(
        [shapes], out, "demo", workers=2, batch_size=8, resume=True, progress=False
    )
    assert result.resumed == len(done)
    assert len(result.records) == N_IMAGES and not result.skipped
    assert {name: (out / name).stat().st_mtime_ns for name in done} == done  # not redone
    assert not list(out.glob(".tmp-*"))
    # The resumed run puts the missing images in other batches than the reference run did, and
    # float32 convolutions round differently for other batch sizes (seen: 7.4e-6 of a map's
    # largest value), so maps are compared to 2e-5 of their largest value here.
    assert_same_outputs(out, reference, relative=2e-5)


def test_a_dying_worker_is_replaced_and_nothing_is_written_twice(
    cluster, models, shapes, reference, tmp_path
):
    marker = tmp_path / "a-worker-died"
    module = models / "dying_demo.py"
    module.write_text(textwrap.dedent(DYING_MODEL.format(marker=str(marker), driver=os.getpid())))
    sys.path.insert(0, str(models))
    try:
        out = tmp_path / "out"
        args = ["--engine", "ray", "--workers", "2", "--format", "parquet", "--no-overlays"]
        args += ["--size", "64", "--mean", "0", "--std", "1"]  # the demo network's inputs
        code = main(
            ["explain", str(shapes), "--model", "dying_demo:make", "--out", str(out), "-q", *args]
        )
    finally:
        sys.path.remove(str(models))
    assert code == EXIT_OK
    assert marker.exists()  # a worker did die
    rows = pq.read_table(out / "explanations.parquet").to_pylist()
    counts = Counter(row["name"] for row in rows)
    assert sorted(counts) == [f"img-{i:03d}" for i in range(N_IMAGES)]
    assert set(counts.values()) == {1}  # every image written once
    with open(out / "predictions.csv", newline="", encoding="utf-8") as file:
        per_image = Counter(row["image"] for row in csv.DictReader(file))
    assert len(per_image) == N_IMAGES and len(set(per_image.values())) == 1
    for row in rows:  # Parquet maps at the layer's resolution: the local maps once upsampled
        stored = map_of(row, "gradcampp")
        assert stored.shape == (16, 16)
        expected = load_map(reference / f"{row['name']}.gradcampp.npy")
        atol = 1e-6 + 2.0**-10 * float(np.abs(expected).max())  # both float16 (see local)
        np.testing.assert_allclose(upsample(stored, (64, 64)), expected, atol=atol, rtol=0)
        record = json.loads((reference / f"{row['name']}.json").read_text())
        assert row["top_class_index"] == [c["class_index"] for c in record["top_classes"]]


def test_explain_batch_in_a_ray_data_pipeline(cluster, shapes):
    import torch

    from gradcampp import GradCAMPP
    from gradcampp.demo import load_demo_model
    from gradcampp.images import read_image
    from gradcampp.model_specs import load_model
    from gradcampp.ray import ExplainBatch

    files = sorted(shapes.glob("*.png"))[:12]
    images = [read_image(f) for f in files]
    dataset = ray.data.from_items([{"image": image} for image in images])
    out = dataset.map_batches(
        ExplainBatch,
        fn_constructor_kwargs={"model": "demo", "methods": ("gradcampp", "gradcam")},
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=6,
    ).take_all()
    assert len(out) == 12
    model = load_demo_model()
    pre = load_model("demo").preprocess  # the inputs exactly as the explainer gets them
    x = torch.from_numpy(np.stack([pre.input(image) for image in images]))
    expected = GradCAMPP(model).explain(x).numpy()
    logits = model(x).detach().numpy()
    by_image = {row["image"].tobytes(): row for row in out}
    for image, want, scores in zip(images, expected, logits, strict=True):
        row = by_image[image.tobytes()]
        assert row["gradcampp"].shape == (64, 64) and row["gradcam"].shape == (64, 64)
        np.testing.assert_allclose(row["gradcampp"], want, atol=1e-6, rtol=0)
        assert row["class_index"] == int(np.argmax(scores))
        assert row["top_class_index"][0] == row["class_index"]
