"""Synthetic defects with exact masks, to measure detectors where no real defect exists.

:func:`make_defect` puts one defect into one good image; :func:`synthesize_dataset` turns
a folder of good images into an MVTec-layout test set with ground-truth masks.
"""

from anomaly.synthesis.dataset import synthesize_dataset
from anomaly.synthesis.defects import KINDS, DefectSpec, make_defect

__all__ = ["KINDS", "DefectSpec", "make_defect", "synthesize_dataset"]
