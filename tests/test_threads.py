"""Concurrent explanations: the same maps as sequential calls, and models left as they were."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import assert_same_snapshot, snapshot

from gradcampp import GradCAM, GradCAMPP, TopK
from gradcampp.concurrency import model_lock


def _resnet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, num_classes=10).train()  # training mode


def _run_concurrently(jobs: list, threads: int = 8, calls: int = 3) -> list:
    """Run each job ``calls`` times from ``threads`` threads released at once; results per job."""
    barrier = threading.Barrier(threads)

    def worker(i: int) -> list:
        barrier.wait()
        return [jobs[i % len(jobs)]() for _ in range(calls)]

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(worker, range(threads)))


@pytest.mark.slow
def test_eight_threads_on_one_explainer_match_sequential_calls():
    model = _resnet(0)
    before = snapshot(model)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    explainer = GradCAMPP(model)
    expected = explainer.explain(images, torch.tensor([1, 7]))
    results = _run_concurrently([lambda: explainer.explain(images, torch.tensor([1, 7]))])
    for per_thread in results:
        for maps in per_thread:
            torch.testing.assert_close(maps, expected, rtol=0, atol=1e-4 * float(expected.max()))
    assert_same_snapshot(before, snapshot(model))
    assert all(module.training for module in model.modules())


@pytest.mark.slow
def test_threads_with_several_explainers_and_models():
    models = [_resnet(0), _resnet(1)]
    before = [snapshot(m) for m in models]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    jobs = [
        lambda: GradCAMPP(models[0]).explain(images),
        lambda: GradCAM(models[0], conv_layer="layer3").explain(images, 3),
        lambda: GradCAMPP(models[1]).explain(images, TopK(2)),
        lambda: GradCAMPP(models[1], variant="authors").explain(images, 5),
    ]
    expected = [job() for job in jobs]
    results = _run_concurrently(jobs)
    for thread, per_thread in enumerate(results):
        reference = expected[thread % len(jobs)]
        for maps in per_thread:
            torch.testing.assert_close(maps, reference, rtol=0, atol=1e-4 * float(reference.max()))
    for model, snap in zip(models, before, strict=True):
        assert_same_snapshot(snap, snapshot(model))


def test_other_threads_running_the_model_are_not_captured():
    # A thread that runs the model itself (not through gradcampp) while an explanation is under
    # way gets its own outputs, and the explanation gets its own activations.
    model = _resnet(3).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    other = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        plain = model(other)
    explainer = GradCAMPP(model)
    expected = explainer.explain(images)
    outputs, maps = [], []

    def run_model() -> None:
        for _ in range(6):
            with torch.no_grad():
                outputs.append(model(other))

    def explain() -> None:
        for _ in range(3):
            maps.append(explainer.explain(images))

    threads = [threading.Thread(target=run_model), threading.Thread(target=explain)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for out in outputs:
        torch.testing.assert_close(out, plain)
    for got in maps:
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * float(expected.max()))


def test_model_lock_is_one_reentrant_lock_per_model():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert model_lock(a) is model_lock(a)
    assert model_lock(a) is not model_lock(b)
    with model_lock(a), model_lock(a):  # re-entrant
        assert not model_lock(b)._is_owned()


def test_keras_threads_match_sequential_calls():
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from keras_helpers import assert_same_snapshot as same_keras
    from keras_helpers import gap_model, images
    from keras_helpers import snapshot as keras_snapshot

    model = gap_model(seed=7)
    before = keras_snapshot(model)
    x = images(3, (9, 11), seed=8)
    jobs = [
        lambda: GradCAMPP(model).explain(x, 1),
        lambda: GradCAM(model, conv_layer="conv").explain(x, TopK(2)),
        lambda: GradCAMPP(model).explain(x, lambda out: out[:, 2]),  # eager path
    ]
    expected = [job().numpy() for job in jobs]
    results = _run_concurrently(jobs, threads=6, calls=2)
    for thread, per_thread in enumerate(results):
        for maps in per_thread:
            assert isinstance(maps, tf.Tensor)
            np.testing.assert_allclose(maps.numpy(), expected[thread % len(jobs)], atol=1e-6)
    same_keras(before, keras_snapshot(model))
    assert isinstance(model, keras.Model)


def test_threads_page_example_runs():
    # docs/threads.md: a training step under model_lock beside an explanation of the same model.
    page = Path(__file__).resolve().parents[1] / "docs" / "threads.md"
    (block,) = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    namespace: dict = {}
    exec(compile(block, "docs/threads.md", "exec"), namespace)
    model = namespace["model"]
    assert namespace["maps"].shape == (2, 16, 16)
    assert model[1].num_batches_tracked.item() == 1  # the training step ran, in training mode
    assert all(module.training for module in model.modules())
    assert all(p.grad is not None for p in model.parameters())
