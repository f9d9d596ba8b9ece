"""``GradCAMPlusPlus`` with the interface of pytorch-grad-cam's ``grad_cam_plusplus`` module."""

from __future__ import annotations

from gradcampp import explainers
from gradcampp.pytorch_grad_cam.base_cam import BaseCAM


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++, called as pytorch-grad-cam's ``GradCAMPlusPlus``.

    See ``BaseCAM`` for the arguments, the call and the result. With the default
    ``variant="pytorch-grad-cam"`` the weights are pytorch-grad-cam 1.5.7's,
    ``alpha = g^2 / (2 g^2 + (sum_ab A_ab) g^3 + 1e-6)``, whose constant outweighs ``2 g^2`` once
    ``|g|`` is below about ``1e-3``; ``variant="paper"`` gives the paper's Eq. 19 without it
    (``gradcampp.formulas.gradcampp_weights``).
    """

    _explainer = explainers.GradCAMPP
