"""A drop-in for pytorch-grad-cam 1.5: its classes and helpers under ``gradcampp.pytorch_grad_cam``.

The classes, targets and image utilities keep pytorch-grad-cam's names, module paths, arguments
and results, so that this is the whole switch::

    from gradcampp.pytorch_grad_cam import GradCAMPlusPlus
    from gradcampp.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from gradcampp.pytorch_grad_cam.utils.image import show_cam_on_image

    with GradCAMPlusPlus(model=model, target_layers=[model.layer4[-1]]) as cam:
        grayscale_cam = cam(input_tensor=x, targets=[ClassifierOutputTarget(281)])

By default the maps reproduce pytorch-grad-cam 1.5.7's numbers (``variant="pytorch-grad-cam"``:
its ``1e-6`` in the Grad-CAM++ weights, its bilinear resize, its min-max scaling); pass
``variant="paper"`` for the exact Grad-CAM++ weights of the paper (Eq. 19) and bicubic upsampling.
Either way the explanation costs about one inference pass: no parameter gradient is computed, and
the model (its mode, hooks and ``.grad``) is left as it was.
"""

from gradcampp.pytorch_grad_cam.base_cam import BaseCAM
from gradcampp.pytorch_grad_cam.grad_cam import GradCAM
from gradcampp.pytorch_grad_cam.grad_cam_plusplus import GradCAMPlusPlus
from gradcampp.pytorch_grad_cam.utils import image, model_targets

__all__ = ["BaseCAM", "GradCAM", "GradCAMPlusPlus", "image", "model_targets"]
