"""How a layer's output lies on the input's grid: pure reasoning on shapes, no framework.

A layer's output is a *feature map of the input* when its spatial shape is the input's spatial
shape divided by one stride. Three layouts are recognised, for inputs with spatial shape ``S``
(rank ``r``) and a batch of ``N``:

- ``channels_first``: ``(N, C, *S')`` (PyTorch's convention; it wins whenever it fits as well);
- ``channels_last``: ``(N, *S', C)`` (e.g. timm's Swin), only when channels-first does not fit
  as well;
- ``tokens``: ``(N, L, D)`` with ``L = p + prod(S')``: ``p`` prefix tokens (class, distillation or
  register tokens, ``0 <= p <= MAX_PREFIX``, dropped) followed by the grid ``S'`` in raster order.

``S'`` fits ``S`` when one integer stride ``s >= 1`` gives ``S'_i`` in
``[floor(S_i / s), ceil(S_i / s)]`` on every axis (the rounding of padded layers). Maps may also
have lost a few border pixels to unpadded convolutions: up to ``max(4, S_i // 10)`` input pixels
per axis (``floor((S_i - m) / s) <= S'_i``); an exact fit of either reading wins over a fit that
needs the margin. Token grids must fit exactly (no margin). A model that says how its tokens
are laid out (a ``TokenHint``: its number of prefix tokens, its patch grid for this input) is read
that way only; counts are guessed from only when it says nothing. For 3-D
inputs the first axis (time or depth) has its own stride; the other axes share one. A map needs
spatial extent: ``prod(S') > 1``.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

#: The most prefix tokens (class, distillation, register tokens) dropped before the grid.
MAX_PREFIX = 8


@dataclass(frozen=True)
class Layout:
    """Where the channels and the grid of one layer's output are.

    Attributes:
        kind: ``"channels_first"``, ``"channels_last"`` or ``"tokens"``.
        grid: the spatial shape ``S'`` of the map.
        prefix: tokens dropped before the grid (``"tokens"`` only).
    """

    kind: str
    grid: tuple[int, ...]
    prefix: int = 0

    def describe(self) -> str:
        """A short phrase for messages, e.g. ``tokens: 1 prefix + 14 x 14 grid``."""
        grid = " x ".join(str(g) for g in self.grid)
        if self.kind == "tokens":
            return f"tokens: {self.prefix} prefix + {grid} grid"
        return f"{self.kind.replace('_', '-')}, grid {grid}"


def _groups(rank: int) -> list[tuple[int, ...]]:
    """Axes that share one stride: all of them, except a 3-D input's first axis."""
    if rank == 3:
        return [(0,), (1, 2)]
    return [tuple(range(rank))]


def _margin(size: int) -> int:
    return max(4, size // 10)


def _same_where_equal(grid: tuple[int, ...], spatial: tuple[int, ...]) -> bool:
    """Axes of equal input size have equal map size: a layer rounds them alike."""
    return all(
        grid[i] == grid[j]
        for i in range(len(spatial))
        for j in range(i)
        if spatial[i] == spatial[j]
    )


def fits(grid: tuple[int, ...], spatial: tuple[int, ...], *, exact: bool = False) -> bool:
    """Whether ``grid`` is ``spatial`` divided by one stride (see the module docstring).

    Args:
        grid: the candidate spatial shape ``S'``.
        spatial: the input's spatial shape ``S``.
        exact: no margin for unpadded convolutions (token grids).
    """
    if len(grid) != len(spatial) or min(grid, default=0) < 1 or math.prod(grid) <= 1:
        return False
    if not _same_where_equal(grid, spatial):
        return False
    for axes in _groups(len(spatial)):
        largest = max(spatial[i] for i in axes)
        if not any(
            all(
                (spatial[i] - (0 if exact else _margin(spatial[i]))) // s
                <= grid[i]
                <= -(-spatial[i] // s)
                for i in axes
            )
            for s in range(1, largest + 1)
        ):
            return False
    return True


def token_grids(count: int, spatial: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every grid of ``count`` cells that fits ``spatial`` exactly (see ``fits``)."""
    found: set[tuple[int, ...]] = set()
    if count < 2:
        return []
    options: list[set[tuple[int, ...]]] = []
    for axes in _groups(len(spatial)):
        shapes: set[tuple[int, ...]] = set()
        for s in range(1, max(spatial[i] for i in axes) + 1):
            sizes = [sorted({spatial[i] // s, -(-spatial[i] // s)}) for i in axes]
            for combo in itertools.product(*sizes):
                if min(combo) >= 1 and count % math.prod(combo) == 0:
                    shapes.add(combo)
        options.append(shapes)
    for parts in itertools.product(*options):
        grid = tuple(g for part in parts for g in part)
        if math.prod(grid) == count and _same_where_equal(grid, spatial):
            found.add(grid)
    return sorted(found)


@dataclass(frozen=True)
class Reading:
    """The outcome of reading one output shape: a layout, nothing, or several readings."""

    layout: Layout | None
    alternatives: tuple[Layout, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return len(self.alternatives) > 1


@dataclass(frozen=True)
class TokenHint:
    """How a model lays out its tokens, from its own attributes (not guessed from counts).

    Attributes:
        prefix: class, distillation and register tokens before the grid, or ``None`` if unknown.
        grid: the patch grid for the input at hand, or ``None`` if unknown.
        source: where the hint comes from, for messages (e.g. ``"model.num_prefix_tokens"``).
    """

    prefix: int | None = None
    grid: tuple[int, ...] | None = None
    source: str = ""

    def admits(self, layout: Layout) -> bool:
        """Whether a token ``layout`` agrees with everything the model says."""
        return (self.prefix is None or layout.prefix == self.prefix) and (
            self.grid is None or layout.grid == self.grid
        )


@functools.lru_cache(maxsize=1024)
def read_layout(
    shape: tuple[int, ...], spatial: tuple[int, ...], hint: TokenHint | None = None
) -> Reading:
    """How an output of ``shape`` ``(N, ...)`` lies on the grid of inputs of shape ``spatial``.

    ``hint`` (the model's own token layout) keeps only the token readings it admits.

    Returns:
        a ``Reading`` with the one consistent layout, with ``layout=None`` and no alternatives
        when none fits, or with ``layout=None`` and the alternatives when several do.
    """
    rank = len(spatial)
    if len(shape) == rank + 2 and math.prod(shape[2:]) <= 1:
        return Reading(None)  # pooled (N, C, 1, ...): never read another way
    if len(shape) == rank + 2:
        for exact in (True, False):  # an exact fit first, then with the margin
            if fits(tuple(shape[2:]), spatial, exact=exact):
                return Reading(Layout("channels_first", tuple(shape[2:])))
            if shape[-1] > 1 and fits(tuple(shape[1:-1]), spatial, exact=exact):
                return Reading(Layout("channels_last", tuple(shape[1:-1])))
    if len(shape) != 3:
        return Reading(None)
    first = 1 if rank == 1 else 0  # a 1-D channels-last map is prefix 0, tested above
    found = [
        Layout("tokens", grid, prefix)
        for prefix in range(first, MAX_PREFIX + 1)
        if shape[1] - prefix >= 2
        for grid in token_grids(shape[1] - prefix, spatial)
    ]
    if hint is not None:
        found = [layout for layout in found if hint.admits(layout)]
    if len(found) == 1:
        return Reading(found[0])
    return Reading(None, tuple(found))


def suggested_transform(shape: tuple[int, ...], layout: Layout | None = None) -> str:
    """Python source of a ``reshape_transform`` for an output of ``shape``, for messages."""
    if layout is not None and layout.kind == "tokens":
        grid = ", ".join(str(g) for g in layout.grid)
        moved = ", ".join(str(i) for i in range(1, len(layout.grid) + 1))
        return (
            f"lambda t: t[:, {layout.prefix}:].reshape(t.shape[0], {grid}, -1)"
            f".permute(0, {len(layout.grid) + 1}, {moved})"
        )
    rank = len(shape) - 2
    moved = ", ".join(str(i) for i in range(1, rank + 1))
    return f"lambda t: t.permute(0, {rank + 1}, {moved})  # (N, *S, C) -> (N, C, *S)"
