"""``gradcampp explain`` end to end: written files and their shapes, model specs, error paths."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from cli_helpers import MODEL_MODULE  # noqa: E402
from PIL import Image  # noqa: E402

from gradcampp.cli import (  # noqa: E402
    EXIT_MODEL,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_SKIPPED,
    EXIT_USAGE,
    main,
)
from gradcampp.maps import load_map  # noqa: E402


def write_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A random RGB image of ``size`` (width, height) saved at ``path``."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_corrupt(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return path


@pytest.fixture
def tiny_spec(tmp_path, monkeypatch):
    """``cli_tinynet:make``, a 5-class CNN importable from a module in ``tmp_path``."""
    module_dir = tmp_path / "models"
    module_dir.mkdir()
    (module_dir / "cli_tinynet.py").write_text(textwrap.dedent(MODEL_MODULE))
    monkeypatch.syspath_prepend(str(module_dir))
    sys.modules.pop("cli_tinynet", None)
    return "cli_tinynet:make"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "cat.jpg", (50, 40), seed=1)
    write_image(folder / "dog.png", (30, 30), seed=2)
    return folder


def test_explain_writes_every_file_with_its_shape(tmp_path, images, tiny_spec, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(images),
            "--model",
            tiny_spec,
            "--size",
            "32",
            "--method",
            "both",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == EXIT_OK
    for stem in ("cat", "dog"):
        for method in ("gradcampp", "gradcam"):
            raw = load_map(out / f"{stem}.{method}.npy")
            assert raw.shape == (32, 32) and raw.dtype == np.float32
            assert raw.min() >= 0.0 and raw.max() > 0.0
            with Image.open(out / f"{stem}.{method}.jpg") as picture:
                assert picture.format == "JPEG" and picture.mode == "RGB"
                assert picture.size == (192, 192)  # 32 px enlarged x6
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["size"] == [32, 32]
        assert record["layer"] == "features"
        assert [row["rank"] for row in record["top_classes"]] == [1, 2, 3, 4, 5]
        probabilities = [row["probability"] for row in record["top_classes"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0)
        assert record["explained"][0]["class_index"] == record["top_classes"][0]["class_index"]
        # how much the two maps disagree: 1 - Pearson r of the maps, computed before they are
        # stored as float16 (each value within 2.4e-4 of its map's maximum)
        pp, gc = (load_map(out / f"{stem}.{m}.npy").ravel() for m in ("gradcampp", "gradcam"))
        expected = 1 - np.corrcoef(pp.astype(np.float64), gc.astype(np.float64))[0, 1]
        assert record["explained"][0]["disagreement"] == pytest.approx(expected, abs=1e-3)
    with open(out / "predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 10 and {row["image"] for row in rows} == {"cat", "dog"}
    assert "Ordered by disagreement (2)" in (out / "index.html").read_text()
    assert (out / "index.html").is_file() and (out / "colorbar.png").is_file()
    assert capsys.readouterr().out == ""  # -q


def test_maps_match_the_python_api(tmp_path, images, tiny_spec):
    from gradcampp import GradCAMPP
    from gradcampp.images import Preprocess, read_image
    from gradcampp.model_specs import IMAGENET_MEAN, IMAGENET_STD

    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                str(images / "cat.jpg"),
                "--model",
                tiny_spec,
                "--size",
                "24x28",
                "--out",
                str(out),
                "-q",
            ]
        )
        == EXIT_OK
    )
    pre = Preprocess(size=(24, 28), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = pre.input(pre.view(read_image(images / "cat.jpg")))[None]
    model = __import__("cli_tinynet").make().eval()
    expected = GradCAMPP(model).explain(x)[0]
    # stored as float16 values with a float32 scale: within 2**-12 of the map's maximum
    half = 2.0**-12 * float(np.abs(np.asarray(expected)).max())
    np.testing.assert_allclose(load_map(out / "cat.gradcampp.npy"), expected, rtol=0, atol=half)


def test_top_k_and_target(tmp_path, images, tiny_spec):
    out = tmp_path / "top"
    assert (
        main(
            [
                "explain",
                str(images),
                "--model",
                tiny_spec,
                "--size",
                "16",
                "--top-k",
                "3",
                "--out",
                str(out),
                "-q",
            ]
        )
        == EXIT_OK
    )
    assert load_map(out / "cat.gradcampp.npy").shape == (3, 16, 16)
    record = json.loads((out / "cat.json").read_text())
    ranks = [row["class_index"] for row in record["top_classes"][:3]]
    assert [row["class_index"] for row in record["explained"]] == ranks
    assert sorted(record["files"]["overlays"]["gradcampp"]) == [
        f"cat.gradcampp.{k}-class_{c}.jpg" for k, c in enumerate(ranks, start=1)
    ]
    out = tmp_path / "target"
    assert (
        main(
            [
                "explain",
                str(images),
                "--model",
                tiny_spec,
                "--size",
                "16",
                "--target",
                "4",
                "--out",
                str(out),
                "-q",
            ]
        )
        == EXIT_OK
    )
    record = json.loads((out / "dog.json").read_text())
    (explained,) = record["explained"]
    probability = {row["class_index"]: row["probability"] for row in record["top_classes"]}[4]
    assert explained == {"class_index": 4, "class_name": "class 4", "probability": probability}


def test_class_names_file_and_name_target(tmp_path, images, tiny_spec):
    names = tmp_path / "names.txt"
    names.write_text("ant\nbee\ncat\ndog\neel\n")
    out = tmp_path / "out"
    args = ["explain", str(images / "dog.png"), "--model", tiny_spec, "--size", "16"]
    assert main([*args, "--classes", str(names), "--target", "eel", "--out", str(out), "-q"]) == 0
    record = json.loads((out / "dog.json").read_text())
    (explained,) = record["explained"]
    assert (explained["class_index"], explained["class_name"]) == (4, "eel")
    assert {row["class_name"] for row in record["top_classes"]} == {
        "ant",
        "bee",
        "cat",
        "dog",
        "eel",
    }


def test_unknown_class_name_target_suggests_the_nearest_names(tmp_path, images, tiny_spec, capsys):
    names = tmp_path / "names.txt"
    names.write_text("tabby cat\nbee\ntiger cat\ndog\neel\n")
    args = ["explain", str(images / "dog.png"), "--model", tiny_spec, "--size", "16"]
    args += ["--classes", str(names), "--out", str(tmp_path / "out"), "-q", "--target"]
    assert main([*args, "cat"]) == EXIT_MODEL
    err = capsys.readouterr().err
    assert "nearest names (index): 'tabby cat' (0), 'tiger cat' (2)" in err
    assert main([*args, "dgo"]) == EXIT_MODEL
    assert "nearest names (index): 'dog' (3)" in capsys.readouterr().err
    assert main([*args, "zebra"]) == EXIT_MODEL
    assert "no name is close to it (the model has 5 classes)" in capsys.readouterr().err


def test_corrupt_image_is_reported_and_skipped(tmp_path, images, tiny_spec, capsys):
    write_corrupt(images / "broken.png")
    out = tmp_path / "out"
    code = main(["explain", str(images), "--model", tiny_spec, "--size", "16", "--out", str(out)])
    assert code == EXIT_SKIPPED
    assert "broken.png" in capsys.readouterr().err
    assert (out / "cat.gradcampp.jpg").is_file() and (out / "dog.gradcampp.jpg").is_file()
    assert not list(out.glob("broken*"))
    assert "broken.png" in (out / "index.html").read_text()  # listed under "Skipped"


def test_only_corrupt_images_exit_nothing(tmp_path, tiny_spec, capsys):
    bad = write_corrupt(tmp_path / "bad.jpg")
    code = main(["explain", str(bad), "--model", tiny_spec, "--out", str(tmp_path / "o"), "-q"])
    assert code == EXIT_NOTHING
    assert "nothing was explained" in capsys.readouterr().err


def test_no_image_found_is_a_usage_error(tmp_path, tiny_spec, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["explain", str(empty), "--model", tiny_spec, "-q"]) == EXIT_USAGE
    assert "no image found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "torchvision:resnet18", "--weights", "missing.pt"], "weights file not found"),
        (["--model", "missing_model.pt"], "model file not found"),
        (["--model", "torchvision:resnet81"], "did you mean resnet18"),
        (["--model", "not-a-spec"], "unknown model spec"),
        (["--model", "no_such_module_xyz:make"], "cannot import module"),
        (["--model", "torchvision:resnet18", "--layer", "layer5"], "nearest names: 'layer4'"),
    ],
)
def test_model_errors_exit_with_a_clear_message(tmp_path, images, capsys, extra, message):
    code = main(["explain", str(images), *extra, "--out", str(tmp_path / "o"), "-q"])
    assert code == EXIT_MODEL
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "index.html").exists()


def test_bad_layer_of_a_callable_model(tmp_path, images, tiny_spec, capsys):
    code = main(
        [
            "explain",
            str(images),
            "--model",
            tiny_spec,
            "--layer",
            "featurez",
            "-q",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == EXIT_MODEL
    assert "'features'" in capsys.readouterr().err


def test_target_out_of_range(tmp_path, images, tiny_spec, capsys):
    code = main(
        [
            "explain",
            str(images),
            "--model",
            tiny_spec,
            "--target",
            "7",
            "--size",
            "16",
            "--out",
            str(tmp_path / "o"),
            "-q",
        ]
    )
    assert code == EXIT_MODEL
    assert "5 classes" in capsys.readouterr().err


def test_torchscript_is_refused_with_the_reason(tmp_path, images, tiny_spec, capsys):
    model = __import__("cli_tinynet").make()
    path = tmp_path / "scripted.pt"
    with pytest.warns(FutureWarning):  # torch.jit is deprecated in recent torch releases
        torch.jit.save(torch.jit.script(model), path)
    code = main(["explain", str(images), "--model", str(path), "-q", "--out", str(tmp_path / "o")])
    assert code == EXIT_MODEL
    assert "TorchScript does not support forward hooks" in capsys.readouterr().err


def test_pickled_module_needs_the_flag(tmp_path, images, tiny_spec, capsys):
    path = tmp_path / "whole.pt"
    torch.save(__import__("cli_tinynet").make(), path)
    args = ["explain", str(images), "--model", str(path), "--size", "16", "-q"]
    assert main([*args, "--out", str(tmp_path / "a")]) == EXIT_MODEL
    assert "--allow-pickle" in capsys.readouterr().err
    assert main([*args, "--allow-pickle", "--out", str(tmp_path / "b")]) == EXIT_OK
    assert load_map(tmp_path / "b" / "cat.gradcampp.npy").shape == (16, 16)


def test_state_dict_alone_asks_for_an_architecture(tmp_path, images, tiny_spec, capsys):
    path = tmp_path / "state.pt"
    torch.save(__import__("cli_tinynet").make().state_dict(), path)
    code = main(["explain", str(images), "--model", str(path), "-q", "--out", str(tmp_path / "o")])
    assert code == EXIT_MODEL
    assert "torchvision:NAME --weights" in capsys.readouterr().err


def test_callable_with_weights(tmp_path, images, tiny_spec):
    model = __import__("cli_tinynet").make()
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0, 0.0]))  # class 2 always wins
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    out = tmp_path / "o"
    assert (
        main(
            [
                "explain",
                str(images),
                "--model",
                tiny_spec,
                "--weights",
                str(path),
                "--size",
                "16",
                "--out",
                str(out),
                "-q",
            ]
        )
        == EXIT_OK
    )
    assert json.loads((out / "cat.json").read_text())["top_classes"][0]["class_index"] == 2


def test_duplicate_names_get_distinct_files(tmp_path, tiny_spec):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "same.png", (20, 20), seed=ord(folder))
    out = tmp_path / "o"
    assert (
        main(
            [
                "explain",
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--model",
                tiny_spec,
                "--size",
                "16",
                "--out",
                str(out),
                "-q",
            ]
        )
        == EXIT_OK
    )
    assert json.loads((out / "same.json").read_text())["input"].endswith("a/same.png")
    assert json.loads((out / "same-2.json").read_text())["input"].endswith("b/same.png")


def test_progress_bar_for_several_images_and_quiet(tmp_path, tiny_spec, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5):
        write_image(folder / f"im{i}.png", (16, 16), seed=i)
    args = ["explain", str(folder), "--model", tiny_spec, "--size", "16"]
    assert main([*args, "--out", str(tmp_path / "a")]) == EXIT_OK
    captured = capsys.readouterr()
    assert "5/5 [" in captured.err and "image/s" in captured.err  # tqdm's bar, with a rate
    assert "Report:" in captured.out and "index.html" in captured.out
    assert main([*args, "--out", str(tmp_path / "b"), "-q"]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_python_m_gradcampp_help_documents_exit_codes():
    result = subprocess.run(
        [sys.executable, "-m", "gradcampp", "explain", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    for code in range(5):
        assert f"\n  {code}  " in result.stdout
    assert "--allow-pickle" in result.stdout and "runs code" in result.stdout


def test_python_m_gradcampp_usage_error_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gradcampp", "explain", str(tmp_path)],  # no --model
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert "--model" in result.stderr


@pytest.mark.slow
def test_torchvision_architecture_with_a_local_state_dict(tmp_path, images):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), weights)
    write_image(images / "wide.jpg", (300, 200), seed=3)
    write_corrupt(images / "zz_broken.jpg")
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(images),
            "--model",
            "torchvision:resnet18",
            "--weights",
            str(weights),
            "--top-k",
            "2",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == EXIT_SKIPPED
    for stem in ("cat", "dog", "wide"):
        assert load_map(out / f"{stem}.gradcampp.npy").shape == (
            2,
            224,
            224,
        )  # resize 256, crop 224
        with Image.open(out / f"{stem}.input.jpg") as picture:
            assert picture.size == (224, 224)
    record = json.loads((out / "wide.json").read_text())
    assert record["layer"] == "layer4"
    categories = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
    top = record["top_classes"][0]
    assert top["class_name"] == categories[top["class_index"]]  # ImageNet-1k names
    # the written map is the Python API's map for the same preprocessed image
    from gradcampp import GradCAMPP, TopK
    from gradcampp.images import read_image
    from gradcampp.model_specs import load_model

    loaded = load_model("torchvision:resnet18", weights=str(weights))
    x = loaded.preprocess.input(loaded.preprocess.view(read_image(images / "wide.jpg")))[None]
    expected = GradCAMPP(model.eval()).explain(x, TopK(2))[0]
    half = 2.0**-12 * float(np.abs(np.asarray(expected)).max())
    np.testing.assert_allclose(
        load_map(out / "wide.gradcampp.npy"), expected, rtol=0, atol=half + 1e-4 * float(half > 0)
    )


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (500, 375)])
def test_torchvision_preprocessing_equals_its_own_transforms(size):
    torchvision = pytest.importorskip("torchvision")
    from gradcampp.model_specs import load_model

    pixels = (np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    preprocess = load_model("torchvision:resnet18").preprocess
    ours = preprocess.input(preprocess.view(pixels))
    transforms = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    reference = transforms(Image.fromarray(pixels)).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_read_image_converts_grey_and_alpha_and_applies_exif_rotation(tmp_path):
    from gradcampp.images import read_image

    Image.fromarray(np.full((5, 7), 200, np.uint8), "L").save(tmp_path / "grey.png")
    assert read_image(tmp_path / "grey.png").shape == (5, 7, 3)
    Image.fromarray(np.zeros((5, 7, 4), np.uint8), "RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png").shape == (5, 7, 3)
    rotated = Image.fromarray(np.zeros((5, 7, 3), np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (7, 5, 3)


def test_imagenet_names_read_without_importing_torchvision():
    torchvision = pytest.importorskip("torchvision")
    from gradcampp.model_specs import imagenet_categories

    expected = tuple(torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"])
    assert imagenet_categories() == expected


def test_output_inside_an_input_folder_is_not_read_back(tmp_path, images, tiny_spec):
    out = images / "results"
    args = ["explain", str(images), "--model", tiny_spec, "--size", "16", "--out", str(out), "-q"]
    assert main(args) == EXIT_OK
    assert main(args) == EXIT_OK  # the second run must not explain the first run's pictures
    assert sorted(p.name for p in out.glob("*.json")) == ["cat.json", "dog.json"]


@pytest.mark.slow
def test_torchvision_state_dict_with_another_number_of_classes(tmp_path, images, capsys):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    weights = tmp_path / "resnet18_10.pt"
    torch.save({"state_dict": torchvision.models.resnet18(num_classes=10).state_dict()}, weights)
    out = tmp_path / "out"
    args = ["explain", str(images / "cat.jpg"), "--model", "torchvision:resnet18", "--weights"]
    assert main([*args, str(weights), "--size", "64", "--out", str(out), "-q"]) == EXIT_OK
    record = json.loads((out / "cat.json").read_text())
    assert len(record["top_classes"]) == 5
    assert all(0 <= row["class_index"] < 10 for row in record["top_classes"])
    top = record["top_classes"][0]
    assert top["class_name"] == f"class {top['class_index']}"  # not ImageNet names


def test_png_pictures_are_the_exact_view_and_the_default_jpeg_ones_are_close(
    tmp_path, images, tiny_spec
):
    from gradcampp.images import Preprocess, read_view

    outs = {}
    for pictures in ("jpeg", "png"):
        outs[pictures] = tmp_path / pictures
        args = ["explain", str(images), "--model", tiny_spec, "--size", "32", "-q"]
        assert main([*args, "--pictures", pictures, "--out", str(outs[pictures])]) == EXIT_OK
    assert not list(outs["jpeg"].glob("cat.*.png")) and not list(outs["png"].glob("cat.*.jpg"))
    for stem, source in (("cat", "cat.jpg"), ("dog", "dog.png")):
        with Image.open(outs["png"] / f"{stem}.input.png") as picture:
            lossless = np.asarray(picture)
        view = read_view(images / source, Preprocess(size=32))
        np.testing.assert_array_equal(lossless, view.repeat(6, axis=0).repeat(6, axis=1))
        for kind in ("input", "gradcampp"):
            with Image.open(outs["png"] / f"{stem}.{kind}.png") as picture:
                exact = np.asarray(picture, dtype=int)
            with Image.open(outs["jpeg"] / f"{stem}.{kind}.jpg") as picture:
                assert picture.format == "JPEG"
                sampling = [(h, v) for _, h, v, _ in picture.layer]  # type: ignore[attr-defined]
                assert sampling == [(1, 1)] * 3  # no chroma subsampling (4:4:4)
                lossy = np.asarray(picture, dtype=int)
            error = np.abs(lossy - exact)
            # random pixels enlarged 6x are a hard case for JPEG: about 2.2 levels on average
            # here, about 1.4 on photographs (benchmarks/pipeline_stages.py)
            assert 0 < error.mean() <= 3.0 and error.max() <= 48, (stem, kind, error.max())
    record = json.loads((outs["jpeg"] / "cat.json").read_text())
    assert record["files"]["input"] == "cat.input.jpg"
    assert record["files"]["overlays"] == {"gradcampp": "cat.gradcampp.jpg"}
