"""pytorch-grad-cam's ``utils``: targets (``model_targets``) and image helpers (``image``)."""

from gradcampp.pytorch_grad_cam.utils import image, model_targets

__all__ = ["image", "model_targets"]
