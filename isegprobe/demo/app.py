"""From a checkpoint and some images to the demo's web app: the probe, its backbone, a session, the server."""

from __future__ import annotations

import torch
from fastapi import FastAPI

from isegprobe.demo.catalog import Catalog
from isegprobe.demo.server import create_app
from isegprobe.demo.session import DemoSession
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.runner import checkpoint_backbone
from isegprobe.training.checkpoint import load_probe


def build_app(
    checkpoint: str, catalog: Catalog, device: str = "cpu", zoom_in: bool = False, threshold: float = 0.5
) -> FastAPI:
    """The demo app for the probe at `checkpoint`, listing the images of `catalog`."""
    torch_device = torch.device(device)
    probe, metadata = load_probe(checkpoint, device=torch_device)
    featurizer = checkpoint_backbone(metadata).to(torch_device)
    if probe.needs_featurizer:
        probe.attach_featurizer(featurizer)
    preprocessing = metadata["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], torch_device, featurizer)
    session = DemoSession(
        predictor, int(preprocessing["size"]), preprocessing.get("resize", "stretch"), threshold, zoom_in
    )
    return create_app(session, catalog)
