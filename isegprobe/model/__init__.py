"""The probe: click maps, click encoders, fusion, head, and `ISProbe` that puts them together."""

from isegprobe.model.click_encoders import create_click_encoder, list_click_encoders, register_click_encoder
from isegprobe.model.clicks import as_click_tensor, click_inputs, click_maps, disk_offsets
from isegprobe.model.heads import SegmentationHead
from isegprobe.model.probe import FUSIONS, ISProbe, needs_featurizer_online, runs_featurizer_online

__all__ = [
    "FUSIONS",
    "ISProbe",
    "SegmentationHead",
    "as_click_tensor",
    "click_inputs",
    "click_maps",
    "create_click_encoder",
    "disk_offsets",
    "list_click_encoders",
    "needs_featurizer_online",
    "register_click_encoder",
    "runs_featurizer_online",
]
