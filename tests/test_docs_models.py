"""Every recipe of docs/models.md runs as written and names the default layer it explains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("timm")
pytest.importorskip("transformers")

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
TITLES = re.findall(r"^## (.+)$", PAGE.read_text(), re.M)[1:]  # one recipe per section


def test_one_recipe_per_kind_of_model():
    assert len(BLOCKS) == len(TITLES) == 7


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=TITLES)
def test_recipe_runs_and_explains_the_layer_it_names(block):
    torch.manual_seed(0)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/models.md", "exec"), namespace)
    named = re.search(r"layer = explainer\.backend\.layer_name\(\w+\)  # \"([^\"]+)\"", block)
    assert named is not None, "each recipe states its default layer"
    assert namespace["layer"] == named.group(1)
    inputs = next(v for k, v in namespace.items() if k in ("images", "image", "waveforms", "clips"))
    maps = namespace["maps"]
    assert tuple(maps.shape) == (inputs.shape[0], *inputs.shape[2:])
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0
    if "same" in namespace:  # the explicit reshape_transform gives the automatic reading's map
        torch.testing.assert_close(namespace["same"], maps)
