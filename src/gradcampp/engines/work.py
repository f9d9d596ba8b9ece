"""The per-image work of an explain run, the same in every engine.

An engine (``gradcampp.engines.local`` in this process, ``gradcampp.engines.ray_engine`` on a
Ray cluster) hands groups of views (images reduced to the model's input size as they are read,
``gradcampp.images.read_view``) to an :class:`ImageWork`, which explains them and writes each
image's files with the steps of ``gradcampp.pipeline`` (``explain_views_isolated``,
``write_image_results``); the engine then finishes the run from the returned records
(``gradcampp.engines.outputs``). Whatever engine runs it, an image gives the same bytes.

Every file is written atomically (``gradcampp._files``: a temporary name, then a rename), so a
file that exists is complete, and an image's ``NAME.json`` is written last: its presence means
every other file of the image is there (``--resume`` relies on it). With ``--format parquet`` the
rows of one group go into one part file, renamed into place after the group's pictures.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp.maps import DEFAULT_MAP_DTYPE, check_map_dtype
from gradcampp.model_specs import LoadedModel
from gradcampp.outputs import display_path
from gradcampp.pipeline import (
    METHODS,
    ImageExplanation,
    _first_line,
    explain_views_isolated,
    make_explainers,
    write_image_results,
)
from gradcampp.resize import resize

FORMATS = ("files", "parquet")
SHOW_TOP = 5


@dataclass(frozen=True)
class Settings:
    """What decides an image's outputs (sent to every worker, so it stays small and picklable).

    Attributes:
        methods: keys of ``gradcampp.pipeline.METHODS``, in column order.
        target: explain this class index for every image; ``top_k``: the ``k`` most probable
            classes of each image; neither: the most probable class.
        layer: the explained layer's name, or None for the automatic choice.
        batch_size: images per forward pass.
        show_top: how many top classes each record lists.
        cmap, alpha: overlay colour map and heatmap weight.
        overlays: write the PNG pictures (the input as the model saw it and one overlay per map)
            and the report.
        format: ``"files"`` (a ``.npy`` and a ``.json`` per image) or ``"parquet"`` (rows of a
            Parquet dataset, see ``gradcampp.engines.parquet``).
        full_size: Parquet maps at the input's resolution instead of the layer's.
        map_dtype: how maps are stored in ``.npy`` files and Parquet rows: ``"float16"`` values
            with a float32 scale per map (half the bytes; ``gradcampp.maps``) or ``"float32"``.
    """

    methods: tuple[str, ...] = ("gradcampp",)
    target: int | None = None
    top_k: int | None = None
    layer: str | None = None
    batch_size: int = 16
    show_top: int = SHOW_TOP
    cmap: str = "inferno"
    alpha: float = 0.5
    overlays: bool = True
    format: str = "files"
    full_size: bool = False
    map_dtype: str = DEFAULT_MAP_DTYPE

    def __post_init__(self) -> None:
        check_map_dtype(self.map_dtype)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be among {sorted(METHODS)}, got {list(self.methods)}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.target is not None and self.top_k is not None:
            raise ValueError("give target or top_k, not both")

    @property
    def layer_resolution(self) -> bool:
        """Whether maps stay at the explained layer's resolution (Parquet, not full size)."""
        return self.format == "parquet" and not self.full_size


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of ``gradcampp._files`` (left by a killed run)."""
    return path.name.startswith(".tmp-") and path.name.endswith(".part")


def upsample(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Maps ``(..., h, w)`` at the layer's resolution -> ``(..., H, W)``: bicubic resize
    (``gradcampp.resize``) clipped at zero, float32, as ``explain(..., upsample=True)`` does.

    The products run in PyTorch when it is loaded, else in NumPy; the two agree to float32
    rounding.
    """
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.clamp_min(resize(torch.from_numpy(maps), tuple(size)), 0.0).numpy()
    return np.maximum(resize(maps, tuple(size)), np.float32(0.0))


@dataclass
class GroupResult:
    """What ``ImageWork.run`` did with a group: a record per explained image, the skipped
    inputs ``(input, reason)``, in order."""

    records: list[dict[str, Any]]
    skipped: list[tuple[str, str]]


class ImageWork:
    """A loaded model with its explainers, turning groups of views into files.

    Args:
        loaded: the model with its preprocessing and class names.
        settings: what to compute and write.

    Raises:
        ModelSpecError: for a bad layer name or a model gradcampp cannot explain.
    """

    def __init__(self, loaded: LoadedModel, settings: Settings):
        self.loaded, self.settings = loaded, settings
        self.explainers = make_explainers(
            loaded, settings.methods, settings.layer, settings.batch_size
        )
        self.layer: str | None = None

    def explain(self, views: Sequence[np.ndarray]) -> list[ImageExplanation | str]:
        """``explain_views_isolated`` on ``views`` with the run's settings (maps at the layer's
        resolution for ``Settings.layer_resolution``); a failed image's entry is the reason."""
        s = self.settings
        found = explain_views_isolated(
            self.loaded,
            self.explainers,
            views,
            s.target,
            s.top_k,
            upsample=not s.layer_resolution,
        )
        if self.layer is None:  # PyTorch and Keras alike: the backend resolves the name
            try:
                sample = self.loaded.preprocess.input(views[0])[None]
                backend = self.explainers[s.methods[0]].backend
                self.layer = backend.layer_name(backend.prepare(sample).x)
            except Exception:  # the name is shown for information only
                self.layer = s.layer
        return found

    def run(
        self,
        views: Sequence[tuple[Path, str, np.ndarray]],
        out_dir: Path,
        part: Path | None = None,
    ) -> GroupResult:
        """Explain ``views`` (``(input path, unique name, uint8 view)``) and write their files.

        Args:
            views: the inputs, read and reduced to the model's view, with their result names.
            out_dir: the run's output directory.
            part: the Parquet part file of this group (``format="parquet"`` only).

        Raises:
            ModelSpecError: for an error of the model as a whole (see
                ``explain_views_isolated``).
        """
        if not views:
            return GroupResult([], [])
        return self.write(views, self.explain([view for _, _, view in views]), out_dir, part)

    def write(
        self,
        views: Sequence[tuple[Path, str, np.ndarray]],
        found: Sequence[ImageExplanation | str],
        out_dir: Path,
        part: Path | None = None,
    ) -> GroupResult:
        """Write the files of ``views`` explained as ``found`` (``explain``'s result); see
        ``run``."""
        result = GroupResult([], [])
        s = self.settings
        rows = []
        for (path, name, view), item in zip(views, found, strict=True):
            if isinstance(item, str):
                result.skipped.append((display_path(path), item))
                continue
            shown = item
            if s.layer_resolution and s.overlays:
                size = view.shape[:2]
                shown = ImageExplanation(
                    item.probs,
                    item.order,
                    item.explained,
                    {m: upsample(maps, size) for m, maps in item.maps.items()},
                )
            try:
                done = write_image_results(
                    out_dir,
                    name,
                    path,
                    view,
                    shown,
                    loaded=self.loaded,
                    layer=self.layer,
                    several=s.top_k is not None,
                    show_top=s.show_top,
                    cmap=s.cmap,
                    alpha=s.alpha,
                    overlays=s.overlays,
                    per_image_files=s.format == "files",
                    map_dtype=s.map_dtype,
                )
            except OSError as error:
                reason = f"cannot write its results ({error.strerror or error})"
                result.skipped.append((display_path(path), reason))
                continue
            except Exception as error:  # any other failure costs this image only
                reason = f"cannot write its results ({_first_line(error)})"
                result.skipped.append((display_path(path), reason))
                continue
            result.records.append(done.record)
            rows.append((done.record, item.maps))
        if s.format == "parquet" and rows:
            from gradcampp.engines.parquet import write_part

            if part is None:
                raise ValueError("format='parquet' needs the part file of the group")
            write_part(part, rows, s)
        return result
