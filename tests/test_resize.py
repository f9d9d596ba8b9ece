"""Separable bicubic resize: kernel, matrices, N-d application, TensorFlow's semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcampp.resize import cubic_matrix, keys_kernel, resize


def test_keys_kernel_values():
    # k(0) = 1, k(+-1) = k(+-2) = 0, k(1/2) = (a+2)/8 - (a+3)/4 + 1 = 0.5625 for a = -0.5,
    # k(3/2) = a(27/8 - 45/4 + 12 - 4) = -0.0625.
    t = np.array([0.0, 1.0, -1.0, 2.0, 0.5, -1.5, 2.5])
    np.testing.assert_allclose(keys_kernel(t), [1, 0, 0, 0, 0.5625, -0.0625, 0], atol=1e-15)


@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("n_in,n_out", [(7, 224), (5, 3), (1, 9), (12, 12), (3, 10)])
def test_matrix_rows_sum_to_one(n_in, n_out, table):
    m = cubic_matrix(n_in, n_out, table)
    assert m.shape == (n_out, n_in)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    if n_in == n_out:
        np.testing.assert_array_equal(m, np.eye(n_in))


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
