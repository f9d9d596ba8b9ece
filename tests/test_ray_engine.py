"""``--engine ray``: the local engine's outputs, resume after a killed driver, dying workers (in
both stage layouts, split and fused), the cluster's resources checked before a run, the layout
rule, and the docs' Ray Data example as written.

One local Ray (2 CPUs) serves the whole module; the killed driver, the run given ``RAY_ADDRESS``
and the docs example join it from other processes.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
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
from gradcampp.images import save_png  # noqa: E402
from gradcampp.maps import load_map  # noqa: E402
from gradcampp.parquet import map_of  # noqa: E402
from gradcampp.stages.write import upsample  # noqa: E402

pytestmark = pytest.mark.slow
N_IMAGES = 200
SRC = Path(gradcampp.__file__).resolve().parents[1]
DOCS = Path(__file__).resolve().parents[1] / "docs"
DEMO_INPUTS = ["--size", "64", "--mean", "0", "--std", "1"]  # the demo network's inputs

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


DYING_WRITER = """
import os
from pathlib import Path


def install():
    \"\"\"In a worker process: end it when it renames a file of ``img-dies-writing`` into place
    (a temporary file is written, then the process ends).\"\"\"
    import gradcampp._files as files

    replace = os.replace

    def dying_replace(source, target):
        if Path(target).name.startswith("img-dies-writing"):
            os._exit(1)
        replace(source, target)

    files.os = type(os)("os_of_files")  # the worker's own os module is left as it is
    files.os.__dict__.update(os.__dict__)
    files.os.replace = dying_replace
"""


@pytest.fixture(scope="module")
def cluster(models):
    """A local Ray with 2 CPUs for the module; its workers also import from ``models``, and
    every worker process ends when it writes a file of ``img-dies-writing`` (``DYING_WRITER``:
    files are written by the write stage's tasks, which load no model, or by the fused layout's
    actors)."""
    (models / "dying_writer.py").write_text(DYING_WRITER)
    path = os.pathsep.join(p for p in (str(models), str(SRC), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": path},
            "worker_process_setup_hook": "dying_writer.install",
        },
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


@pytest.mark.parametrize("layout", ["split", "fused"])
def test_ray_two_workers_give_the_local_outputs(cluster, shapes, reference, layout):
    out = reference.parent / f"ray-{layout}"  # beside the reference: the same relative paths
    code = explain(shapes, out, "--engine", "ray", "--workers", "2", "--ray-stages", layout)
    assert code == EXIT_OK
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


@pytest.mark.parametrize("layout", ["split", "fused"])
def test_a_dying_worker_is_replaced_and_nothing_is_written_twice(
    cluster, models, shapes, reference, tmp_path, layout
):
    marker = tmp_path / "a-worker-died"
    module = models / "dying_demo.py"
    module.write_text(textwrap.dedent(DYING_MODEL.format(marker=str(marker), driver=os.getpid())))
    sys.path.insert(0, str(models))
    try:
        out = tmp_path / "out"
        args = ["--engine", "ray", "--workers", "2", "--format", "parquet", "--no-overlays"]
        args += ["--size", "64", "--mean", "0", "--std", "1"]  # the demo network's inputs
        args += ["--ray-stages", layout]
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


KILLING_MODEL = """
import os

from gradcampp.demo import load_demo_model

DRIVER = {driver}


def make():
    model = load_demo_model()
    forward = model.forward

    def dying_forward(x):
        # the white image (every input value 1) ends the worker's process, every time
        if os.getpid() != DRIVER and bool((x.flatten(1).amin(dim=1) >= 0.999).any()):
            os._exit(1)
        return forward(x)

    model.forward = dying_forward
    return model
"""


@pytest.fixture(scope="module")
def with_deadly(shapes, tmp_path_factory) -> Path:
    """Seven demo images, an all-white one (``img-white.png``), on which the killing model ends
    its process, and ``img-dies-writing.png``, whose first file ends the process writing it (the
    cluster's ``DYING_WRITER``)."""
    folder = tmp_path_factory.mktemp("inputs") / "deadly"
    folder.mkdir()
    files = sorted(shapes.glob("*.png"))
    for path in files[:7]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "img-dies-writing.png").write_bytes(files[7].read_bytes())
    save_png(folder / "img-white.png", np.full((64, 64, 3), 255, dtype=np.uint8))
    return folder


@pytest.mark.parametrize("layout", ["split", "fused"])
def test_images_that_kill_their_worker_every_time_are_reported_and_the_rest_written(
    cluster, models, with_deadly, tmp_path, capsys, layout
):
    """Split: the white image ends an explain actor, ``img-dies-writing`` a write task; fused:
    both end the actor that reads, explains and writes them."""
    (models / "killing_demo.py").write_text(KILLING_MODEL.format(driver=os.getpid()))
    sys.path.insert(0, str(models))
    out = tmp_path / "out"
    args = ["--engine", "ray", "--workers", "2", "--format", "parquet", "--batch-size", "4"]
    args += ["--ray-stages", layout]
    start = time.monotonic()
    try:
        model = "killing_demo:make"
        code = main(["explain", str(with_deadly), "--model", model, "--out", str(out), "-q", *args])
    finally:
        sys.path.remove(str(models))
    took = time.monotonic() - start
    printed = capsys.readouterr()
    err = printed.err
    assert code == 1, err  # EXIT_SKIPPED: the two images reported, the others written
    assert printed.out == ""  # -q, and none of Ray's messages about the dying workers
    died = "the worker process explaining it died, 2 times with it alone"
    assert sorted(line.split(": the")[0] for line in err.splitlines()) == [
        f"gradcampp: skipped {with_deadly / 'img-dies-writing.png'}",
        f"gradcampp: skipped {with_deadly / 'img-white.png'}",
    ]
    assert all(died in line for line in err.splitlines())
    assert took < 300
    rows = pq.read_table(out / "explanations.parquet").to_pylist()
    counts = Counter(row["name"] for row in rows)
    assert counts == Counter({f"img-{i:03d}": 1 for i in range(7)})  # every other one, once
    with open(out / "predictions.csv", newline="", encoding="utf-8") as file:
        assert {row["image"] for row in csv.DictReader(file)} == set(counts)
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []  # what the dying worker was writing is removed
    assert not list(out.glob("img-dies-writing*")) and not list(out.glob("img-white*"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(args: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p
    )
    environment.update(env)
    command = [sys.executable, "-m", "gradcampp", *args]
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def test_an_address_where_nothing_listens_ends_at_once_with_one_line(shapes, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    args = ["explain", str(shapes), "--model", "demo", "--out", str(tmp_path / "out"), "-q"]
    done = run_cli(
        [*args, "--engine", "ray", "--address", address],
        tmp_path,
        timeout=60,
    )
    assert time.monotonic() - start < 30
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"gradcampp: error: cannot join the Ray cluster at {address}: nothing answers at "
        f"{address} (Connection refused); start it with `ray start --head` or check --address"
    ]


@pytest.fixture
def silent_port():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_an_address_that_accepts_but_never_answers_ends_in_one_line(shapes, tmp_path, silent_port):
    address = f"127.0.0.1:{silent_port}"
    args = ["explain", str(shapes), "--model", "demo", "--out", str(tmp_path / "out"), "-q"]
    start = time.monotonic()
    done = run_cli([*args, "--engine", "ray", "--address", address], tmp_path, timeout=90)
    assert time.monotonic() - start < 30  # Ray alone waits minutes
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"gradcampp: error: cannot join the Ray cluster at {address}: {address} accepts "
        "connections but does not answer as Ray (no gRPC reply within 5 s); check --address"
    ]


def test_gpus_asked_of_a_cluster_without_gpus_is_an_error_before_anything_starts(
    cluster, shapes, tmp_path, capsys
):
    out = tmp_path / "out"
    code = explain(shapes, out, "--engine", "ray", "--gpus-per-worker", "1", "--workers", "2")
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "gradcampp: error: the Ray cluster has 2 CPU(s) and 0 GPU(s), not enough for one worker, "
        "which needs 1 CPU(s) and 1 GPU(s) (--gpus-per-worker): run on a cluster with GPUs, or "
        "give --gpus-per-worker 0 to run on CPUs"
    ]
    assert not list(out.glob("*.json"))


def test_more_workers_than_the_cluster_holds_run_as_many_as_fit_and_say_so(
    cluster, with_deadly, tmp_path, capsys
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in sorted(with_deadly.glob("img-0*.png"))[:4]:
        (inputs / path.name).write_bytes(path.read_bytes())
    code = explain(inputs, tmp_path / "out", "--engine", "ray", "--workers", "100")
    assert code == 0
    assert capsys.readouterr().err.splitlines() == [
        "gradcampp: warning: --workers 100: the Ray cluster has 2 CPU(s) and 0 GPU(s), room for 2 "
        "worker(s), so 2 run"
    ]
    assert len(list((tmp_path / "out").glob("img-*.json"))) == 4


def test_plan_workers_counts_what_fits():
    from gradcampp.engines.ray_engine import plan_workers

    assert plan_workers({"CPU": 8.0, "GPU": 2.0}, None, 1.0, 0.25) == (8, None)
    assert plan_workers({"CPU": 8.0, "GPU": 2.0}, None, 1.0, 1.0) == (2, None)
    assert plan_workers({"CPU": 1.0}, None, 0.1, 0.0) == (10, None)  # 1 / 0.1 is 9.999...
    assert plan_workers({"CPU": 4.0}, 3, 1.0, 0.0) == (3, None)
    count, note = plan_workers({"CPU": 4.0, "GPU": 1.0}, 3, 1.0, 0.5)
    assert count == 2 and note is not None and "room for 2 worker(s)" in note
    with pytest.raises(ValueError, match="needs 2 CPU"):
        plan_workers({"CPU": 1.0}, 1, 2.0, 0.0)


def test_ray_address_in_the_environment_joins_that_cluster_quietly(cluster, with_deadly, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in sorted(with_deadly.glob("img-0*.png"))[:6]:
        (inputs / path.name).write_bytes(path.read_bytes())
    done = run_cli(
        ["explain", "in", "--model", "demo", "--out", "out", "--engine", "ray", "--workers", "2"],
        tmp_path,
        timeout=300,
        RAY_ADDRESS=cluster,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out").glob("img-*.json"))) == 6
    # the progress bar and nothing else: no line of Ray's own (core_worker, raylet, warnings)
    lines = [line for line in re.split(r"[\r\n]+", done.stderr) if line.strip()]
    assert lines and all(line.startswith("explaining:") for line in lines), done.stderr
    assert done.stdout.splitlines()[0].startswith("Explained 6 image(s); results in ")


def test_the_docs_ray_data_example_runs_as_written(cluster, shapes, tmp_path):
    """``docs/ray.md``'s first Python example, on the 2-CPU cluster with ``concurrency=2``, from
    another folder than the cluster's (a relative path must be resolved on the driver)."""
    import torch

    from gradcampp import GradCAMPP
    from gradcampp.demo import load_demo_model
    from gradcampp.images import read_image
    from gradcampp.model_specs import load_model

    section = (DOCS / "ray.md").read_text().split("\n## Python\n", 1)[1]
    example = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    assert "concurrency=2" in example and '"images/"' in example
    (tmp_path / "example.py").write_text(example)
    (tmp_path / "images").mkdir()
    files = sorted(shapes.glob("*.png"))[:6]
    for path in files:
        (tmp_path / "images" / path.name).write_bytes(path.read_bytes())
    environment = dict(os.environ, RAY_ADDRESS=cluster)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p
    )
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,  # a hang (actors holding every CPU) ends here as a failure
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pq.read_table(tmp_path / "maps").to_pylist()
    assert len(rows) == len(files)
    images = [read_image(f) for f in files]
    pre = load_model("demo").preprocess
    x = torch.from_numpy(np.stack([pre.input(image) for image in images]))
    expected = GradCAMPP(load_demo_model()).explain(x).numpy()
    for row in rows:
        got = np.asarray(row["gradcampp"], dtype=np.float32)
        assert got.shape == (64, 64)
        distance = min(float(np.abs(got - want).max()) for want in expected)
        assert distance < 1e-5  # each row is the map of one of the images


def test_model_actors_leave_cpus_to_the_other_stages():
    from gradcampp.ray import actor_cpus

    assert actor_cpus(2.0, 2) == 0.5  # the docs' example: 1 of 2 CPUs left to reading
    assert actor_cpus(1.0, 1) == 0.5
    assert actor_cpus(16.0, 4) == 1.0
    assert actor_cpus(16.0, 30) == pytest.approx(0.5)
    for cpus, actors in ((2.0, 7), (3.0, 3), (64.0, 64)):
        assert actors * actor_cpus(cpus, actors) <= cpus - min(1.0, cpus / 2)
    with pytest.raises(ValueError, match="concurrency must be a positive integer, got 0"):
        actor_cpus(2.0, 0)


def test_model_actors_leave_cpus_to_the_reading_and_writing_tasks():
    from gradcampp.engines.ray_engine import stage_cpus

    assert stage_cpus({"CPU": 2.0}, 2, 1.0) == (0.5, 0.25)  # --workers 2 on 2 CPUs: 1 CPU left
    assert stage_cpus({"CPU": 1.0}, 1, 1.0) == (0.5, 0.25)
    assert stage_cpus({"CPU": 16.0}, 4, 1.0) == (1.0, 0.25)  # room enough: what was asked
    assert stage_cpus({"CPU": 16.0}, 4, 2.0) == (2.0, 0.25)
    assert stage_cpus({"CPU": 0.5}, 1, 0.5) == (0.25, 0.125)
    for cpus, workers, each in ((2.0, 2, 1.0), (3.0, 3, 1.0), (8.0, 4, 2.0), (64.0, 64, 1.0)):
        actor, task = stage_cpus({"CPU": cpus}, workers, each)
        assert workers * actor <= cpus - min(1.0, cpus / 2) + 1e-9
        assert actor <= each and 2 * task <= min(1.0, cpus / 2)  # a read and a write task fit


def test_a_local_ray_keeps_a_process_for_each_actor_and_each_task_that_fits():
    from gradcampp.engines.ray_engine import worker_processes

    assert worker_processes(8) == 12  # 8 CPUs and 1 / 0.25 tasks
    assert worker_processes(2) == 6
    assert worker_processes(1) == 3  # 1 CPU, and 0.5 / 0.25 tasks
    assert worker_processes(8, "fused") == 8  # no tasks
    assert worker_processes(1.5, "fused") == 2


def _stages(gpus: float, layout: str = "split"):
    from gradcampp.engines.ray_stages import stage_plan
    from gradcampp.model_specs import load_model
    from gradcampp.recipe import ModelRecipe
    from gradcampp.stages.settings import Settings

    return stage_plan(
        load_model("demo"),
        ModelRecipe("demo"),
        Settings(),
        Path("/tmp/out"),
        "run",
        actor_cpus=0.5,
        task_cpus=0.25,
        gpus_per_worker=gpus,
        layout=layout,
    )


def test_read_and_write_are_cpu_tasks_and_only_explain_holds_the_model_and_gpus():
    stages = _stages(0.5)
    assert [(s.name, s.compute) for s in stages] == [
        ("read", "tasks"),
        ("explain", "actors"),
        ("write", "tasks"),
    ]
    assert [s.resources for s in stages] == [
        {"num_cpus": 0.25},
        {"num_cpus": 0.5, "num_gpus": 0.5},
        {"num_cpus": 0.25},
    ]
    assert "recipe" in stages[1].kwargs and "recipe" not in stages[0].kwargs
    assert stages[2].kwargs["loaded"].model is None  # the write tasks get no model
    assert all("num_gpus" not in s.resources for s in _stages(0.0))


def test_the_ray_data_plan_has_task_read_and_write_around_an_actor_pool(cluster):
    from gradcampp.engines.ray_stages import build_dataset

    groups = [
        {"group": g, "indices": [g], "files": [f"/x/{g}.png"], "names": [str(g)]} for g in (0, 1, 2)
    ]
    dataset = build_dataset(ray, groups, _stages(0.25), workers=2, retries=2)  # not executed
    chain = []
    op = dataset._logical_plan.dag
    while op.input_dependencies:
        chain.append(op)
        op = op.input_dependencies[0]
    chain.reverse()
    assert [type(op.compute).__name__ for op in chain] == [
        "TaskPoolStrategy",
        "ActorPoolStrategy",
        "TaskPoolStrategy",
    ]
    assert [op.ray_remote_args.get("num_gpus") for op in chain] == [None, 0.25, None]
    assert [op.ray_remote_args.get("num_cpus") for op in chain] == [0.25, 0.5, 0.25]
    assert chain[1].compute.min_size == chain[1].compute.max_size == 2
    assert [op.ray_remote_args.get("max_retries") for op in chain] == [2, None, 2]
    assert chain[1].ray_remote_args["max_task_retries"] == 2


def test_stages_are_split_when_a_gpu_is_asked_and_fused_on_cpus():
    from gradcampp._ray import choose_layout

    assert choose_layout("auto", 1.0) == "split"
    assert choose_layout("auto", 0.1) == "split"  # a share of a GPU is a GPU
    assert choose_layout("auto", 0.0) == "fused"
    assert choose_layout("split", 0.0) == "split"  # asked for: allowed without GPUs
    assert choose_layout("fused", 1.0) == "fused"
    with pytest.raises(ValueError, match="stages must be one of auto, split, fused, got 'both'"):
        choose_layout("both", 0.0)


def test_fused_actors_reserve_their_cpus_and_keep_none_for_tasks():
    from gradcampp.engines.ray_engine import stage_cpus

    assert stage_cpus({"CPU": 2.0}, 2, 1.0, "fused") == (1.0, 0.0)  # split: (0.5, 0.25)
    assert stage_cpus({"CPU": 16.0}, 4, 2.0, "fused") == (2.0, 0.0)
    assert stage_cpus({"CPU": 1.0}, 1, 0.5, "fused") == (0.5, 0.0)
    with pytest.raises(ValueError, match="layout must be 'split' or 'fused', got 'auto'"):
        stage_cpus({"CPU": 2.0}, 2, 1.0, "auto")


def test_the_fused_plan_is_one_actor_pool_that_reads_explains_and_writes(cluster):
    from gradcampp.engines.ray_stages import FusedActor, build_dataset

    stages = _stages(0.5, "fused")
    assert [(s.name, s.fn, s.compute, s.resources) for s in stages] == [
        ("fused", FusedActor, "actors", {"num_cpus": 0.5, "num_gpus": 0.5})
    ]
    assert stages[0].kwargs["out_dir"] == "/tmp/out" and stages[0].kwargs["run_id"] == "run"
    assert _stages(0.0, "fused")[0].resources == {"num_cpus": 0.5}
    groups = [{"group": 0, "indices": [0], "files": ["/x/0.png"], "names": ["0"]}]
    dataset = build_dataset(ray, groups, _stages(0.0, "fused"), workers=2, retries=2)
    op = dataset._logical_plan.dag  # not executed
    assert type(op.compute).__name__ == "ActorPoolStrategy"
    assert op.compute.min_size == op.compute.max_size == 1  # one group: one actor
    assert op.ray_remote_args["max_task_retries"] == 2
    assert type(op.input_dependencies[0]).__name__ == "FromItems"


def test_a_bad_ray_stages_value_is_a_one_line_usage_error(shapes, tmp_path, capsys):
    out = tmp_path / "out"
    assert explain(shapes, out, "--engine", "ray", "--ray-stages", "both") == 2
    assert capsys.readouterr().err.splitlines() == [
        "gradcampp: error: argument --ray-stages: invalid choice: 'both' (choose from 'auto', "
        "'split', 'fused') (see gradcampp explain --help)"
    ]
    with pytest.raises(ValueError, match="stages must be one of auto, split, fused, got 'both'"):
        gradcampp.ray.explain_files([shapes], out, "demo", stages="both", progress=False)
    assert explain(shapes, out, "--ray-stages", "split") == 2  # the local engine has no stages
    assert capsys.readouterr().err.splitlines() == [
        "gradcampp: error: --ray-stages need --engine ray"
    ]
    assert not out.exists()
