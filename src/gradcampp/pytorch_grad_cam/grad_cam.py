"""``GradCAM`` with pytorch-grad-cam's interface (``pytorch_grad_cam.grad_cam``)."""

from __future__ import annotations

from gradcampp import explainers
from gradcampp.pytorch_grad_cam.base_cam import BaseCAM


class GradCAM(BaseCAM):
    """Grad-CAM, ``w_k = mean_ij g_ij``, called as pytorch-grad-cam's ``GradCAM``.

    See ``BaseCAM`` for the arguments, the call and the result. The weights are the same in both
    variants; ``variant="pytorch-grad-cam"`` (default) resizes bilinearly as pytorch-grad-cam
    does, ``variant="paper"`` bicubically.
    """

    _explainer = explainers.GradCAM
