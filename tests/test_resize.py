"""Separable bicubic resize: kernel, taps, N-d application, TensorFlow's semantics.

The reference here is the dense ``(out, in)`` interpolation matrix, built independently of the
library's four-tap code: ``resize`` must give the same numbers without ever forming it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

from gradcampp import GradCAMPP
from gradcampp.resize import _float32_table, cubic_taps, keys_kernel, resize


def cubic_matrix(n_in: int, n_out: int, kernel_table: bool = False) -> np.ndarray:
    """The dense ``(n_out, n_in)`` resize matrix: each row holds its four taps, the ones outside
    the input dropped and the rest renormalised (TensorFlow's float32 table when asked)."""
    rows = []
    for o in range(n_out):
        if kernel_table:
            scale = np.float32(n_in) / np.float32(n_out)
            x = (np.float32(o) + np.float32(0.5)) * scale - np.float32(0.5)
            base = int(np.floor(x))
            step = int(np.rint((x - np.float32(base)) * np.float32(1024)))
            table = _float32_table()
            taps = np.array(
                [table[step, 1], table[step, 0], table[1024 - step, 0], table[1024 - step, 1]]
            )
        else:
            x = (o + 0.5) * n_in / n_out - 0.5
            base = int(np.floor(x))
            taps = keys_kernel(x - np.arange(base - 1, base + 3))
        row = np.zeros(n_in)
        kept = [
            (i, t) for i, t in zip(range(base - 1, base + 3), taps, strict=True) if 0 <= i < n_in
        ]
        total = (
            np.float32(sum(np.float32(t) for _, t in kept))
            if kernel_table
            else sum(t for _, t in kept)
        )
        for i, t in kept:
            row[i] += np.float32(t) * (np.float32(1) / total) if kernel_table else t / total
        rows.append(row)
    return np.array(rows)


def test_keys_kernel_values():
    # k(0) = 1, k(+-1) = k(+-2) = 0, k(1/2) = (a+2)/8 - (a+3)/4 + 1 = 0.5625 for a = -0.5,
    # k(3/2) = a(27/8 - 45/4 + 12 - 4) = -0.0625.
    t = np.array([0.0, 1.0, -1.0, 2.0, 0.5, -1.5, 2.5])
    np.testing.assert_allclose(keys_kernel(t), [1, 0, 0, 0, 0.5625, -0.0625, 0], atol=1e-15)


@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("n_in,n_out", [(7, 224), (5, 3), (1, 9), (12, 12), (3, 10), (2, 1)])
def test_taps_are_the_rows_of_the_dense_matrix(n_in, n_out, table):
    first, weights = cubic_taps(n_in, n_out, table)
    assert first.shape == (n_out,) and weights.shape == (4, n_out)
    outside = (first + np.arange(4)[:, None] < 0) | (first + np.arange(4)[:, None] >= n_in)
    assert np.all(weights[outside] == 0)
    index = np.clip(first + np.arange(4)[:, None], 0, n_in - 1)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-6)
    dense = np.zeros((n_out, n_in))
    np.add.at(dense, (np.broadcast_to(np.arange(n_out), index.shape), index), weights)
    reference = cubic_matrix(n_in, n_out, table)
    np.testing.assert_allclose(dense, reference, rtol=0, atol=1e-7 if table else 1e-15)
    if n_in == n_out:
        np.testing.assert_array_equal(reference, np.eye(n_in))


def test_interior_reproduces_quadratics():
    # Keys' a = -0.5 kernel interpolates polynomials up to degree 2 exactly (Keys 1981), where no
    # tap falls outside the input.
    n_in, n_out = 10, 40
    m = cubic_matrix(n_in, n_out)
    x_in = np.arange(n_in, dtype=np.float64)
    x_out = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    inside = (np.floor(x_out) - 1 >= 0) & (np.floor(x_out) + 2 <= n_in - 1)
    for poly in (lambda x: 3 + 0 * x, lambda x: 2 * x - 1, lambda x: 0.3 * x**2 - x):
        np.testing.assert_allclose((m @ poly(x_in))[inside], poly(x_out)[inside], atol=1e-12)


def test_edge_taps_are_dropped_and_renormalised():
    # Output 0 of 2 -> 8 samples reads x = 0.5 * 2/8 - 0.5 = -0.375, floor -1: taps -2 and -1 lie
    # outside and are dropped; taps 0 and 1, at distances 0.375 and 1.375, are renormalised.
    m = cubic_matrix(2, 8)
    w = keys_kernel(np.array([0.375, 1.375]))
    np.testing.assert_allclose(m[0], w / w.sum(), rtol=1e-12)


@pytest.mark.parametrize(
    "shape,size", [((2, 9), (20,)), ((2, 3, 4), (6, 9)), ((1, 3, 4, 5), (6, 7, 8))]
)
def test_nd_resize_is_separable_and_framework_neutral(shape, size):
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    out = resize(x, size)
    expected = x
    for axis in range(len(size)):
        m = cubic_matrix(x.shape[x.ndim - len(size) + axis], size[axis])
        expected = np.moveaxis(
            np.tensordot(m, expected, axes=([1], [x.ndim - len(size) + axis])),
            0,
            x.ndim - len(size) + axis,
        )
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    out_t = resize(torch.from_numpy(x.astype(np.float32)), size)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_resize_rejects_too_many_axes():
    with pytest.raises(ValueError, match="cannot resize 3 axes"):
        resize(np.zeros((4, 4)), (2, 2, 2))


@pytest.mark.parametrize(
    "h,w,out_h,out_w", [(7, 7, 224, 224), (5, 9, 100, 37), (10, 10, 4, 6), (3, 4, 3, 9)]
)
def test_kernel_table_matches_tensorflow(h, w, out_h, out_w):
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(1).random((2, h, w)).astype(np.float32)
    theirs = tf.image.resize(x[..., None], (out_h, out_w), method="bicubic").numpy()[..., 0]
    ours = resize(x, (out_h, out_w), kernel_table=True)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@lru_cache(maxsize=1)
def _dense_3000_to_48000() -> np.ndarray:
    # 48,000 x 3,000 float64: 1.15 GB, the matrix that the resize no longer builds
    return cubic_matrix(3000, 48000)


def _conv1d_maps() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A stride-16 Conv1d network, 3 s of 16 kHz audio, and its maps at the layer (3,000)."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv1d(1, 8, 9, stride=4, padding=4),
        nn.ReLU(),
        nn.Conv1d(8, 16, 9, stride=4, padding=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()
    x = torch.randn(2, 1, 48000, generator=torch.Generator().manual_seed(1))
    low = GradCAMPP(model, conv_layer="3").explain(x, upsample=False)
    return model, x, low


def test_explaining_48000_samples_matches_the_dense_resize():
    model, x, low = _conv1d_maps()
    assert low.shape == (2, 3000)
    maps = GradCAMPP(model, conv_layer="3").explain(x)
    assert maps.shape == (2, 48000)
    reference = np.maximum(low.double().numpy() @ _dense_3000_to_48000().T, 0)
    scale = reference.max(axis=1, keepdims=True)
    np.testing.assert_allclose(maps.numpy() / scale, reference / scale, rtol=0, atol=1e-6)


@pytest.mark.parametrize("framework", ["numpy", "tensorflow"])
def test_long_signal_matches_the_dense_matrix_in_every_framework(framework):
    maps = _conv1d_maps()[2].numpy()[:, None, :]  # (2, 1, 3000)
    if framework == "tensorflow":
        tf = pytest.importorskip("tensorflow")
        got = resize(tf.constant(maps), (48000,)).numpy()
    else:
        got = resize(maps, (48000,))
    assert got.shape == (2, 1, 48000) and got.dtype == np.float32
    reference = maps.astype(np.float64) @ _dense_3000_to_48000().T
    scale = reference.max(axis=2, keepdims=True)
    np.testing.assert_allclose(got / scale, reference / scale, rtol=0, atol=1e-6)


def test_tensorflow_resize_uses_no_matrix_product(monkeypatch):
    # tf.linalg.matmul of a rank-4 tensor with a matrix corrupts memory under oneDNN on AVX-512
    # CPUs (tensorflow issues 117700, 123109): the resize must not call it at all.
    tf = pytest.importorskip("tensorflow")
    calls = []
    real = tf.linalg.matmul
    monkeypatch.setattr(tf.linalg, "matmul", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(tf, "matmul", lambda *a, **k: calls.append(a) or real(*a, **k))
    maps = tf.constant(np.random.default_rng(0).random((5, 3, 7, 7)), tf.float32)
    first = resize(maps, (30, 30), kernel_table=True).numpy()
    np.testing.assert_allclose(first, resize(maps.numpy(), (30, 30), kernel_table=True), atol=1e-6)
    for _ in range(40):  # repeated calls in one process: results identical every time
        np.testing.assert_array_equal(resize(maps, (30, 30), kernel_table=True).numpy(), first)
    assert calls == []


def test_tensorflow_namespace_refuses_broadcast_matmul():
    tf = pytest.importorskip("tensorflow")
    from gradcampp.backends import tf_namespace

    with pytest.raises(ValueError, match="no broadcasting"):
        tf_namespace.matmul(tf.zeros((13, 1, 3, 4)), tf.zeros((4, 16)))
    same = tf_namespace.matmul(tf.ones((2, 3, 4)), tf.ones((2, 4, 5)))
    np.testing.assert_array_equal(same.numpy(), np.full((2, 3, 5), 4.0))
