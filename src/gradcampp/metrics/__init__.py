"""Quality metrics for explanation maps, usable with any explainer of this package.

- ``faithfulness``: Average Drop %, % Increase in Confidence and Win % (Grad-CAM++ paper, 4.1);
- ``deletion``: Deletion and Insertion curves and areas (Petsiuk et al. 2018);
- ``localization``: pointing game, energy-based pointing game, Loc(delta), instance recall
  (by energy and by peak);
- ``sanity``: cascading model randomisation with Spearman rank correlation (Adebayo et al. 2018).

Metrics that run the model accept a ``torch.nn.Module`` returning ``(N, K)`` class scores;
maps and images may be NumPy arrays or tensors. Results are NumPy arrays or floats.
"""

from gradcampp.metrics._arrays import boxes_to_masks, minmax_normalize
from gradcampp.metrics.deletion import CausalCurves, curve_auc, deletion, gaussian_blur, insertion
from gradcampp.metrics.faithfulness import (
    Confidence,
    average_drop,
    explanation_confidence,
    explanation_images,
    increase_in_confidence,
    win_percentage,
)
from gradcampp.metrics.localization import (
    energy_pointing_game,
    instance_peak_recall,
    instance_recall,
    loc_delta,
    pointing_game,
)
from gradcampp.metrics.sanity import SanityResult, cascading_randomization, spearman_correlation

__all__ = [
    "CausalCurves",
    "Confidence",
    "SanityResult",
    "average_drop",
    "boxes_to_masks",
    "cascading_randomization",
    "curve_auc",
    "deletion",
    "energy_pointing_game",
    "explanation_confidence",
    "explanation_images",
    "gaussian_blur",
    "increase_in_confidence",
    "insertion",
    "instance_peak_recall",
    "instance_recall",
    "loc_delta",
    "minmax_normalize",
    "pointing_game",
    "spearman_correlation",
    "win_percentage",
]
