"""The documentation's self-contained examples (the home page's quick start) run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Pages whose Python blocks define everything they use; the method pages show fragments.
SELF_CONTAINED = ["index.md"]
BLOCKS = [
    (page, i, block)
    for page in SELF_CONTAINED
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S))
]


def test_home_page_has_a_quick_start():
    assert len(BLOCKS) >= 1


@pytest.mark.slow
@pytest.mark.parametrize(("page", "index", "block"), BLOCKS, ids=lambda v: str(v)[:20])
def test_docs_example_runs(page, index, block):
    namespace: dict[str, object] = {}
    exec(compile(block, f"docs/{page} example {index}", "exec"), namespace)
    maps, top3 = namespace["maps"], namespace["top3"]  # each quick start: what it promises
    size = tuple(maps.shape[1:3])
    assert size in ((224, 224), (128, 128))
    channels = (1,) if "keras" in namespace else ()  # Keras maps keep xplique's channel axis
    assert tuple(maps.shape) == (4, *size, *channels)
    assert tuple(top3.shape) == (4, 3, *size, *channels)
    assert float(np.asarray(maps).min()) >= 0.0
