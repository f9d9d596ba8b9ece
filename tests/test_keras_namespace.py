"""The TensorFlow array namespace against NumPy, and the shared formulas run in it."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402

from gradcampp._xp import constant_like, namespace  # noqa: E402
from gradcampp.backends import tf_namespace as xp  # noqa: E402
from gradcampp.formulas import (  # noqa: E402
    class_activation_map,
    gradcam_weights,
    gradcampp_weights,
)
from gradcampp.resize import resize  # noqa: E402

RNG = np.random.default_rng(0)


def test_namespace_of_tensors_is_this_module():
    assert namespace(tf.zeros(2)) is xp
    assert namespace(np.zeros(2), tf.zeros(2)) is xp


def test_functions_match_numpy():
    a = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    t = tf.constant(a)
    np.testing.assert_allclose(
        xp.sum(t, axis=(2, 3), keepdims=True), a.sum((2, 3), keepdims=True), rtol=1e-6
    )
    np.testing.assert_allclose(xp.mean(t, axis=(1, 3)), a.mean((1, 3)), rtol=1e-6)
    np.testing.assert_array_equal(xp.moveaxis(t, 1, -1), np.moveaxis(a, 1, -1))
    np.testing.assert_array_equal(xp.moveaxis(t, -1, 0), np.moveaxis(a, -1, 0))
    np.testing.assert_array_equal(xp.reshape(t, (2, 3, -1)), a.reshape(2, 3, -1))
    m = RNG.normal(size=(2, 3, 5, 7)).astype(np.float32)  # same rank and batch axes: no broadcast
    np.testing.assert_allclose(xp.matmul(t, tf.constant(m)), a @ m, rtol=1e-5, atol=1e-6)
    index = tf.constant([4, 0, 0, 2], tf.int64)
    np.testing.assert_array_equal(xp.take(t, index, axis=-1), np.take(a, [4, 0, 0, 2], axis=-1))
    np.testing.assert_array_equal(xp.take(t, index[1:], axis=1), np.take(a, [0, 0, 2], axis=1))
    np.testing.assert_array_equal(xp.stack([t, t], axis=2), np.stack([a, a], axis=2))
    np.testing.assert_array_equal(xp.maximum(t, 0.0), np.maximum(a, 0))
    where = xp.where(t > 0, t, 0.0)
    assert where.dtype == tf.float32
    np.testing.assert_array_equal(where, np.where(a > 0, a, 0))
    np.testing.assert_array_equal(xp.concat([t, t], axis=1), np.concatenate([a, a], axis=1))
    assert xp.astype(t > 0, xp.float32).dtype == tf.float32
    assert bool(xp.all(xp.isfinite(t)))
    assert not bool(xp.all(xp.isfinite(tf.constant([1.0, np.inf]))))


def test_argsort_is_stable_when_descending():
    scores = tf.constant([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 1.0, 2.0, 5.0]])
    order = xp.argsort(scores, axis=1, descending=True, stable=True)
    assert order.dtype == tf.int64
    np.testing.assert_array_equal(order, [[1, 2, 4, 0, 3], [4, 0, 1, 3, 2]])
    picked = xp.take_along_axis(scores, order[:, :2], axis=1)
    np.testing.assert_array_equal(picked, [[3.0, 3.0], [5.0, 2.0]])
    a = RNG.normal(size=(3, 4, 5))
    index = RNG.integers(0, 4, size=(3, 2, 5))
    np.testing.assert_array_equal(
        xp.take_along_axis(tf.constant(a), tf.constant(index), axis=1),
        np.take_along_axis(a, index, axis=1),
    )


def test_constant_like_takes_the_dtype_asked_for():
    like = tf.zeros(3, tf.float32)
    assert constant_like(np.arange(3.0), like, xp).dtype == tf.float32
    assert constant_like(np.arange(3), like, xp, xp.int64).dtype == tf.int64


@pytest.mark.parametrize("variant", ["paper", "xplique", "authors"])
def test_formulas_in_tensorflow_equal_numpy(variant):
    acts = np.maximum(RNG.normal(size=(2, 6, 5, 7)), 0).astype(np.float32)
    grads = (RNG.normal(size=(2, 3, 6, 5, 7)) * 1e-2).astype(np.float32)
    grads[0, 0, 0] = 0.0  # a channel without gradient: the zero-denominator guard
    expected = class_activation_map(acts, gradcampp_weights(acts, grads, variant))
    got = class_activation_map(
        tf.constant(acts), gradcampp_weights(tf.constant(acts), tf.constant(grads), variant)
    )
    assert isinstance(got, tf.Tensor)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(
        gradcam_weights(tf.constant(grads)), gradcam_weights(grads), rtol=1e-5, atol=1e-9
    )


@pytest.mark.parametrize("kernel_table", [False, True])
def test_resize_in_tensorflow_equals_numpy(kernel_table):
    maps = RNG.uniform(size=(2, 3, 5, 7)).astype(np.float32)
    got = resize(tf.constant(maps), (12, 9), kernel_table=kernel_table)
    assert isinstance(got, tf.Tensor) and got.dtype == tf.float32
    np.testing.assert_allclose(
        got, resize(maps, (12, 9), kernel_table=kernel_table), rtol=1e-5, atol=1e-6
    )


def test_table_resize_is_tensorflow_bicubic():
    maps = RNG.uniform(size=(3, 5, 7)).astype(np.float32)
    expected = tf.image.resize(maps[..., None], (37, 11), method="bicubic")[..., 0]
    got = resize(tf.constant(maps), (37, 11), kernel_table=True)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
