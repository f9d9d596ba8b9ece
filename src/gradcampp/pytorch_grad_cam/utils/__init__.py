"""pytorch-grad-cam's ``utils``: targets, image helpers and the eigen-smoothing projection."""

from gradcampp.pytorch_grad_cam.utils import image, model_targets, svd_on_activations
from gradcampp.pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

__all__ = ["get_2d_projection", "image", "model_targets", "svd_on_activations"]
