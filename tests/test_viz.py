"""Overlays and explanation grids: exact blending, layouts, frameworks, lazy matplotlib."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from gradcampp.viz import colorize, normalize_map, overlay, plot_explanations, to_rgb  # noqa: E402


def _image(seed: int = 0, shape: tuple[int, int] = (6, 8)) -> np.ndarray:
    return np.random.default_rng(seed).random((*shape, 3)).astype(np.float32)


def test_to_rgb_reads_channels_first_and_last_the_same():
    hwc = _image()
    np.testing.assert_array_equal(to_rgb(np.moveaxis(hwc, -1, 0)), hwc)
    np.testing.assert_array_equal(to_rgb(hwc), hwc)


def test_to_rgb_scales_uint8_and_other_ranges():
    np.testing.assert_allclose(to_rgb(np.full((2, 2, 3), 255, np.uint8)), 1.0)
    normalised = np.array([[-2.0, 0.0], [1.0, 2.0]], dtype=np.float32)  # e.g. after mean/std
    grey = to_rgb(normalised)
    assert grey.shape == (2, 2, 3)
    np.testing.assert_allclose(grey[..., 0], [[0.0, 0.5], [0.75, 1.0]])
    assert to_rgb(np.zeros((3, 3, 4), np.uint8)).shape == (3, 3, 3)  # alpha dropped


def test_to_rgb_rejects_a_bad_shape():
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        to_rgb(np.zeros((2, 6, 7)))


def test_normalize_map_min_max_and_layouts():
    heat = np.array([[1.0, 3.0], [5.0, 9.0]])
    expected = (heat - 1.0) / 8.0
    np.testing.assert_allclose(normalize_map(heat), expected)
    np.testing.assert_allclose(normalize_map(heat[..., None]), expected)  # (H, W, 1) Keras
    np.testing.assert_allclose(normalize_map(heat[None]), expected)  # (1, H, W)
    np.testing.assert_array_equal(normalize_map(np.full((3, 3), 7.0)), np.zeros((3, 3)))


def test_normalize_map_resizes_with_gradcampp_resize():
    from gradcampp.resize import resize

    heat = np.random.default_rng(1).random((4, 5))
    up = np.asarray(resize(heat, (8, 10)))
    expected = (up - up.min()) / (up.max() - up.min())
    np.testing.assert_allclose(normalize_map(heat, (8, 10)), expected, atol=1e-6)


def test_normalize_map_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        normalize_map(np.array([[0.0, np.nan]]))


def test_overlay_blends_image_and_colour_map():
    image = _image()
    heat = np.random.default_rng(2).random((6, 8))
    colours = colorize((heat - heat.min()) / (heat.max() - heat.min()), "viridis")
    out = overlay(image, heat, cmap="viridis", alpha=0.25)
    assert out.dtype == np.float32 and out.shape == (6, 8, 3)
    np.testing.assert_allclose(out, 0.75 * image + 0.25 * colours, atol=1e-6)
    np.testing.assert_allclose(overlay(image, heat, alpha=0.0), image, atol=1e-7)


def test_overlay_keeps_uint8_and_colours_the_maximum_brightest():
    image = np.zeros((4, 4, 3), np.uint8)
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0
    out = overlay(image, heat, cmap="inferno", alpha=1.0)
    assert out.dtype == np.uint8
    brightness = out.astype(int).sum(axis=-1)
    assert np.unravel_index(brightness.argmax(), brightness.shape) == (1, 2)
    np.testing.assert_array_equal(out[1, 2], np.rint(colorize(1.0, "inferno") * 255))


def test_overlay_resizes_a_layer_resolution_map():
    out = overlay(_image(shape=(16, 16)), np.random.default_rng(3).random((4, 4)))
    assert out.shape == (16, 16, 3)


def test_overlay_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    image, heat = _image(), np.random.default_rng(4).random((6, 8)).astype(np.float32)
    expected = overlay(image, heat)
    got = overlay(torch.from_numpy(np.moveaxis(image, -1, 0)), torch.from_numpy(heat)[None])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_overlay_rejects_bad_alpha_and_colour_map():
    with pytest.raises(ValueError, match="alpha"):
        overlay(_image(), np.ones((6, 8)), alpha=1.5)
    with pytest.raises(ValueError, match="colour map"):
        overlay(_image(), np.ones((6, 8)), cmap="no-such-map")


def _overlay_panels(figure) -> list:
    return [ax for ax in figure.axes if ax.images]


def test_plot_explanations_torch_layout():
    torch = pytest.importorskip("torch")
    images = torch.rand(5, 3, 12, 10)
    maps = torch.rand(5, 12, 10)
    figure = plot_explanations(images, maps, cols=3, titles=list("abcde"))
    panels = _overlay_panels(figure)
    assert len(panels) == 5
    assert [ax.get_title() for ax in panels] == list("abcde")
    first = panels[0].images[0].get_array()
    np.testing.assert_allclose(first, overlay(images[0], maps[0]), atol=1e-6)
    matplotlib.pyplot.close(figure)


def test_plot_explanations_keras_layout_with_images():
    images = np.random.default_rng(5).random((3, 12, 10, 3)).astype(np.float32)  # NHWC
    maps = np.random.default_rng(6).random((3, 12, 10, 1)).astype(np.float32)  # xplique
    figure = plot_explanations(images, maps, show_images=True, cols=3)
    panels = _overlay_panels(figure)
    assert len(panels) == 6  # image, overlay, image, overlay, ...
    np.testing.assert_allclose(panels[0].images[0].get_array(), images[0])
    np.testing.assert_allclose(panels[1].images[0].get_array(), overlay(images[0], maps[0]))
    matplotlib.pyplot.close(figure)


TF_CHECK = """
import matplotlib
matplotlib.use("Agg")
import numpy as np
import tensorflow as tf
from gradcampp.viz import overlay, plot_explanations

images = np.random.default_rng(7).random((2, 8, 8, 3)).astype(np.float32)
maps = np.random.default_rng(8).random((2, 8, 8, 1)).astype(np.float32)
figure = plot_explanations(tf.constant(images), tf.constant(maps))
panels = [ax for ax in figure.axes if ax.images]
assert len(panels) == 2
np.testing.assert_allclose(panels[1].images[0].get_array(), overlay(images[1], maps[1]))
print("ok")
"""


@pytest.mark.slow
def test_plot_explanations_with_tensorflow_tensors():
    # in a child process: TensorFlow and PyTorch loaded into one process can crash each other
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    result = subprocess.run(
        [sys.executable, "-c", TF_CHECK], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_plot_explanations_rejects_mismatched_counts():
    with pytest.raises(ValueError, match="same number of samples"):
        plot_explanations(np.zeros((2, 4, 4, 3)), np.zeros((3, 4, 4)))


def test_matplotlib_is_imported_lazily():
    code = "import sys, gradcampp.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def _colour_bars(figure) -> list:
    return [ax for ax in figure.axes if getattr(ax, "_colorbar", None) is not None]


def test_plot_explanations_draws_a_colour_bar_of_the_normalised_scale():
    images = np.random.default_rng(9).random((3, 12, 10, 3)).astype(np.float32)
    maps = np.random.default_rng(10).random((3, 12, 10)).astype(np.float32) * 7.0 + 3.0
    figure = plot_explanations(images, maps, cmap="viridis", cols=2)
    bars = _colour_bars(figure)
    assert len(bars) == 1
    bar = bars[0]._colorbar
    assert bar.mappable.get_cmap().name == "viridis"
    assert (bar.vmin, bar.vmax) == (0.0, 1.0)  # maps are min-max scaled: the scale is 0..1
    assert list(bar.get_ticks()) == [0.0, 0.5, 1.0]
    assert "minimum" in bars[0].get_ylabel() and "maximum" in bars[0].get_ylabel()
    assert len(_overlay_panels(figure)) == 3  # the bar is not one of the panels
    matplotlib.pyplot.close(figure)


def test_plot_explanations_without_a_colour_bar():
    images = np.random.default_rng(11).random((2, 8, 8, 3)).astype(np.float32)
    maps = np.random.default_rng(12).random((2, 8, 8)).astype(np.float32)
    figure = plot_explanations(images, maps, colorbar=False)
    assert _colour_bars(figure) == []
    assert len(figure.axes) == 2
    matplotlib.pyplot.close(figure)


def test_plot_explanations_saves_with_its_colour_bar(tmp_path):
    images = np.random.default_rng(13).random((4, 16, 16, 3)).astype(np.float32)
    maps = np.random.default_rng(14).random((4, 16, 16)).astype(np.float32)
    with_bar = plot_explanations(images, maps, cols=4, img_size=1.0)
    without = plot_explanations(images, maps, cols=4, img_size=1.0, colorbar=False)
    assert with_bar.get_figwidth() > without.get_figwidth()  # room for the bar
    with_bar.savefig(tmp_path / "grid.png")  # constrained layout: no tight_layout warning
    assert (tmp_path / "grid.png").stat().st_size > 0
    matplotlib.pyplot.close(with_bar)
    matplotlib.pyplot.close(without)


@pytest.mark.parametrize("cmap", ["inferno", "viridis", "jet"])
def test_lookup_table_gives_matplotlibs_colours(cmap):
    import matplotlib

    from gradcampp.viz import colormap_lut

    values = np.random.default_rng(0).random((64, 48))
    values[0, :4] = [0.0, 1.0, 255 / 256, np.nextafter(255 / 256, 0)]  # bin edges
    expected = np.asarray(matplotlib.colormaps[cmap](values)[..., :3], dtype=np.float32)
    np.testing.assert_array_equal(colorize(values, cmap), expected)
    single = values.astype(np.float32)  # float32 values: matplotlib given the same values
    expected = np.asarray(matplotlib.colormaps[cmap](single)[..., :3], dtype=np.float32)
    np.testing.assert_array_equal(colorize(single, cmap), expected)
    assert colormap_lut(cmap) is colormap_lut(cmap)  # built once per name
    assert colormap_lut(cmap).shape == (256, 3) and not colormap_lut(cmap).flags.writeable


@pytest.mark.parametrize(("n", "cols", "img_size"), [(3, 3, 2.5), (4, 4, 1.0), (2, 2, 0.6)])
def test_colour_bar_label_lies_inside_the_saved_figure(tmp_path, n, cols, img_size):
    images = np.random.default_rng(15).random((n, 16, 16, 3)).astype(np.float32)
    maps = np.random.default_rng(16).random((n, 16, 16)).astype(np.float32)
    figure = plot_explanations(images, maps, cols=cols, img_size=img_size)
    figure.savefig(tmp_path / "grid.png")  # the default savefig: the whole figure, no cropping
    renderer = figure.canvas.get_renderer()
    (bar,) = _colour_bars(figure)
    label = bar.yaxis.label
    assert "minimum" in label.get_text() and "maximum" in label.get_text()
    box, page = label.get_window_extent(renderer), figure.bbox
    assert box.height > 0 and box.width > 0
    assert page.x0 <= box.x0 and box.x1 <= page.x1, (box, page)
    assert page.y0 <= box.y0 and box.y1 <= page.y1, (box, page)
    matplotlib.pyplot.close(figure)
