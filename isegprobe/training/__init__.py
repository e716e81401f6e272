"""Training: RITM's point sampler and iterative clicks, the normalized focal loss, checkpoints, the train loop."""

from isegprobe.training.checkpoint import load_probe, save_checkpoint
from isegprobe.training.losses import NormalizedFocalLoss, normalized_focal_loss
from isegprobe.training.points_sampler import MultiPointSampler
from isegprobe.training.run_loop import train
from isegprobe.training.run_state import TrainSummary
from isegprobe.training.trainer import Trainer

__all__ = [
    "MultiPointSampler",
    "NormalizedFocalLoss",
    "TrainSummary",
    "Trainer",
    "load_probe",
    "normalized_focal_loss",
    "save_checkpoint",
    "train",
]
