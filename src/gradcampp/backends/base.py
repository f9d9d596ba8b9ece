"""What every backend hands to the explainers."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Batch:
    """Validated inputs in the backend's framework.

    Attributes:
        x: the inputs, ready for the model, ``(N, ...)``.
        spatial: the spatial shape ``S`` of one input, which maps are resized to.
        finish: turns maps ``(N, [T,] *S)`` (float32, the backend's framework) into what the caller
            gets back (same framework and device as the inputs, NumPy for NumPy inputs).
        targets: targets that came with the inputs (a dataset of ``(input, target)`` pairs), or
            ``None``.
    """

    x: Any
    spatial: tuple[int, ...]
    finish: Callable[[Any], Any]
    targets: Any = None


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages: its type, and shape if it has one."""
    shape = getattr(value, "shape", None)
    return type(value).__name__ + ("" if shape is None else f" of shape {tuple(shape)}")


def unknown_layer(what: str, name: str, names: Sequence[str], kind: str = "layer") -> ValueError:
    """The error for a layer ``name`` that the model does not have, listing the nearest names."""
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.3) or list(names[-5:])
    return ValueError(
        f"{what}: the model has no {kind} named {name!r}; nearest names: "
        + ", ".join(repr(n) for n in near)
    )
