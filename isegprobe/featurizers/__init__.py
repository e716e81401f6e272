"""Frozen vision backbones (timm ViTs, DINOv2, CLIP, MaskCLIP) behind one interface: images -> dense features."""

from isegprobe.featurizers.base import Featurizer
from isegprobe.featurizers.factory import create_featurizer, parse_featurizer_name
from isegprobe.featurizers.weights import RandomWeightsWarning

__all__ = ["Featurizer", "RandomWeightsWarning", "create_featurizer", "parse_featurizer_name"]
