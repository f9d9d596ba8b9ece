"""The settings of an explain run: what decides an image's outputs, the same in every stage.

A :class:`Settings` is small, frozen and picklable: it is sent to every worker of a cluster, and
every stage (``gradcampp.stages.read``, ``.explain``, ``.write``) is a function of its inputs and
of these settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradcampp.explainers import GradCAM, GradCAMPP
from gradcampp.images import DEFAULT_PICTURES, check_pictures
from gradcampp.maps import DEFAULT_MAP_DTYPE, check_map_dtype

METHODS: dict[str, tuple[type[GradCAM], str]] = {
    "gradcampp": (GradCAMPP, "Grad-CAM++"),
    "gradcam": (GradCAM, "Grad-CAM"),
}
FORMATS = ("files", "parquet")
SHOW_TOP = 5


@dataclass(frozen=True)
class Settings:
    """What decides an image's outputs (sent to every worker, so it stays small and picklable).

    Attributes:
        methods: keys of ``METHODS``, in column order.
        target: explain this class index for every image; ``top_k``: the ``k`` most probable
            classes of each image; neither: the most probable class.
        layer: the explained layer's name, or None for the automatic choice.
        batch_size: images per forward pass.
        show_top: how many top classes each record lists.
        cmap, alpha: overlay colour map and heatmap weight.
        overlays: write the pictures (the input as the model saw it and one overlay per map)
            and the report.
        pictures: their format: ``"jpeg"`` (quality 95, no chroma subsampling) or ``"png"``
            (lossless; ``gradcampp.images.PICTURE_FORMATS``).
        format: ``"files"`` (a ``.npy`` and a ``.json`` per image) or ``"parquet"`` (rows of a
            Parquet dataset, see ``gradcampp.parquet``).
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
    pictures: str = DEFAULT_PICTURES
    format: str = "files"
    full_size: bool = False
    map_dtype: str = DEFAULT_MAP_DTYPE

    def __post_init__(self) -> None:
        check_map_dtype(self.map_dtype)
        check_pictures(self.pictures)
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
