"""Grad-CAM++ and Grad-CAM explanations for PyTorch and Keras 3 (TensorFlow) models.

>>> from gradcampp import GradCAMPP
>>> maps = GradCAMPP(model).explain(images, labels)  # doctest: +SKIP
"""

from gradcampp.concurrency import model_lock
from gradcampp.explainers import GradCAM, GradCAMPP
from gradcampp.targets import Classes, TopK

__all__ = ["Classes", "GradCAM", "GradCAMPP", "TopK", "__version__", "model_lock"]
__version__ = "0.1.0"
