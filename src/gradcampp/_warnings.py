"""Warnings that point at the user's own line, however deep in gradcampp they are raised."""

from __future__ import annotations

import sys
import warnings


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside the
    ``gradcampp`` package (the line of the user's code that led to it), found by walking the
    stack instead of counting its frames by hand."""
    frame = sys._getframe(1)
    level = 1  # warnings.warn's stacklevel of ``frame``, counted from this function's caller
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] == (
        "gradcampp"
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level + 1)
