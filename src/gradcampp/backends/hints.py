"""What a PyTorch model says about its own token layout: a ``layout.TokenHint``, or ``None``.

Read from the model's attributes, never from the shapes of its outputs:

- timm: ``model.num_prefix_tokens`` (class, distillation and register tokens), and the patch grid
  from ``model.patch_embed``: ``dynamic_feat_size(S)`` when the model takes any input size
  (``dynamic_img_size``), else its fixed ``grid_size``. A timm model without
  ``num_prefix_tokens`` has as many prefix tokens as its token parameters hold (``cls_token``,
  ``dist_token``, ``reg_token``; none for LeViT), and no stated grid.
- Hugging Face: the prefix tokens are those of the token parameters (``cls_token``,
  ``distillation_token``, ``register_tokens``); a model with a class token states the grid
  ``S // config.patch_size`` (a model without one, such as Swin, may change grids by stage).

Any other model gives ``None``: its token outputs are read from their counts alone.
"""

from __future__ import annotations

from typing import Any

from gradcampp.backends.layout import TokenHint

#: Parameters that hold prefix tokens, shaped ``(1, count, dim)``.
TOKEN_PARAMETERS = (
    "cls_token",
    "dist_token",
    "distillation_token",
    "reg_token",
    "register_tokens",
)


def _token_parameters(model: Any) -> int:
    """Prefix tokens held by the model's token parameters (``(1, count, dim)`` each)."""
    count = 0
    for name, parameter in model.named_parameters():
        if name.rsplit(".", 1)[-1] in TOKEN_PARAMETERS and parameter.ndim == 3:
            count += int(parameter.shape[1])
    return count


def _origin(model: Any) -> str:
    return type(model).__module__.split(".", 1)[0]


def _timm_grid(model: Any, spatial: tuple[int, ...]) -> tuple[int, ...] | None:
    embed = getattr(model, "patch_embed", None)
    if embed is None or len(spatial) != 2:
        return None
    if getattr(model, "dynamic_img_size", False) and hasattr(embed, "dynamic_feat_size"):
        return tuple(int(g) for g in embed.dynamic_feat_size(spatial))
    grid = getattr(embed, "grid_size", None)
    if grid is None or getattr(embed, "img_size", None) is None:
        return None
    return tuple(int(g) for g in grid)


def token_hint(model: Any, spatial: tuple[int, ...]) -> TokenHint | None:
    """The token layout ``model`` states for inputs of spatial shape ``spatial``, or ``None``."""
    origin = _origin(model)
    if origin == "timm":
        prefix = getattr(model, "num_prefix_tokens", None)
        if not isinstance(prefix, int):  # not a plain ViT: its grid may change from stage to stage
            return TokenHint(_token_parameters(model), None, "the model's token parameters")
        grid = _timm_grid(model, spatial)
        source = "model.num_prefix_tokens" + ("" if grid is None else " and model.patch_embed")
        return TokenHint(prefix, grid, source)
    if origin == "transformers":
        config = getattr(model, "config", None)
        patch = getattr(config, "patch_size", None)
        prefix = _token_parameters(model)
        grid = None
        if not prefix:  # no class token: hierarchical (Swin), its grid changes between stages
            pass
        elif isinstance(patch, int) and len(spatial) == 2 and patch > 0:
            grid = tuple(size // patch for size in spatial)
        elif isinstance(patch, list | tuple) and len(patch) == len(spatial):
            grid = tuple(size // p for size, p in zip(spatial, patch, strict=True))
        return TokenHint(prefix, grid, "model.config and the model's token parameters")
    return None
