"""Shared pieces of the command-line tests: a tiny importable model module and image writers."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np

MODEL_MODULE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def make():
    torch.manual_seed(0)
    return TinyNet()


class PicksyNet(TinyNet):
    """Fails, as a model of its own can, on inputs it does not like: very bright images."""

    def forward(self, x):
        if bool((x.mean(dim=(1, 2, 3)) > 1.5).any()):
            raise RuntimeError("input out of the range this model was trained on")
        return super().forward(x)


def picky():
    torch.manual_seed(0)
    return PicksyNet()


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make()

    def forward(self, x):
        return self.net(x), x.mean()


def pair():
    return Pair()


def flat():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))


def raises():
    raise RuntimeError("no checkpoint configured")


class InfiniteNet(TinyNet):
    """Class scores that overflowed: +inf for every class."""

    def forward(self, x):
        return super().forward(x) + float("inf")


def infinite():
    torch.manual_seed(0)
    return InfiniteNet()


def needs(depth, width=2):
    return make()
'''

BROKEN_MODULE = "import torch\nraise OSError('cannot find the config file')\n"


def write_model_modules(folder: Path) -> None:
    """Write the modules ``hostile_models`` and ``hostile_broken`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hostile_models.py").write_text(textwrap.dedent(MODEL_MODULE))
    (folder / "hostile_broken.py").write_text(BROKEN_MODULE)


def install_models(folder: Path, monkeypatch) -> None:
    """``write_model_modules`` into ``folder`` and make the modules importable."""
    write_model_modules(folder)
    monkeypatch.syspath_prepend(str(folder))
    for name in ("hostile_models", "hostile_broken"):
        sys.modules.pop(name, None)


def write_image(path: str | os.PathLike | bytes, size=(20, 16), seed: int = 0) -> None:
    """A random RGB PNG of ``size`` (width, height) at ``path`` (bytes paths allowed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    with open(path, "wb") as file:
        Image.fromarray(pixels).save(file, format="PNG")


def digest(path: str | os.PathLike | bytes) -> str:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def digests(folder: Path) -> dict[bytes, str]:
    """sha256 of every file directly in ``folder``, by its name in bytes."""
    root = os.fsencode(folder)
    return {
        name: digest(os.path.join(root, name))
        for name in os.listdir(root)
        if os.path.isfile(os.path.join(root, name))
    }


def tree(folder: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """Every entry under ``folder``, links not followed: relative path -> (kind, sha256 of a
    file's bytes, a link's target, or "")."""
    found: dict[str, tuple[str, str]] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            key = os.path.relpath(path, folder)
            if stat.S_ISLNK(mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                found[key] = ("file", digest(path))
            elif stat.S_ISDIR(mode):
                found[key] = ("dir", "")
            else:
                found[key] = ("special", "")
    return found


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not warnings, skip notes or progress bars."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(("gradcampp: warning", "gradcampp: skipped", "\r"))
    ]


# File names an attacker or a careless user gives: the issue's cases ...
ISSUE_NAMES = [
    "javascript:alert(document.title).png",
    "a#b.png",
    "what?x=1.png",
    "100%.png",
    "%2e%2e%2fup.png",
    "back\\slash.png",
    "=HYPERLINK(1).png",
    "+1.png",
    "-2.png",
    "@SUM(1).png",
    "\ttab.png",
    "\rcr.png",
    '<img src=x onerror="window.pwned=1">.png',
    "<script>window.pwned=2.png",
    "<svg onload=window.pwned=3>.png",
    "quote\"and'apostrophe.png",
    "new\nline.png",
    "ünïcödé 日本 😀.png",
    "..png",
    "x" * 245 + ".png",  # a 249-character name
]
# ... and a generated list: every awkward ASCII character inside and at the start of a name.
AWKWARD = "#?%&<>\"'`=+-@:;,\\ []{}|^~!$()*"
GENERATED_NAMES = [f"in{ch}side.png" for ch in AWKWARD] + [f"{ch}start.png" for ch in AWKWARD]
