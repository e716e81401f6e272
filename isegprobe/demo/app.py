"""From checkpoints and some images to the demo's web app: the probes, their backbones, a session, the server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from fastapi import FastAPI
from torch import nn

from isegprobe.demo.catalog import Catalog
from isegprobe.demo.server import create_app
from isegprobe.demo.session import DemoProbe, DemoSession
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.runner import checkpoint_backbone
from isegprobe.training.checkpoint import load_probe


def build_app(
    checkpoints: Sequence[str], catalog: Catalog, device: str = "cpu", zoom_in: bool = False, threshold: float = 0.5
) -> FastAPI:
    """The demo app for the probes at `checkpoints` (side by side, on the same clicks), listing `catalog`'s images.
    Probes on the same backbone share one copy of it."""
    torch_device = torch.device(device)
    backbones: dict[str, nn.Module] = {}
    probes = []
    for checkpoint in checkpoints:
        probe, metadata = load_probe(checkpoint, device=torch_device)
        provenance = metadata.get("featurizer_provenance") or {}
        key = f"{provenance.get('name')}|{provenance.get('weights')}|{provenance.get('weights_sha256')}"
        if key not in backbones:
            backbones[key] = checkpoint_backbone(metadata).to(torch_device)
        featurizer = backbones[key]
        if probe.needs_featurizer:
            probe.attach_featurizer(featurizer)
        preprocessing = metadata["preprocessing"]
        predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], torch_device, featurizer)
        size, resize = int(preprocessing["size"]), preprocessing.get("resize", "stretch")
        probes.append(DemoProbe(_label(metadata), predictor, size, resize))
    return create_app(DemoSession(probes, threshold, zoom_in), catalog)


def _label(metadata: dict[str, Any]) -> str:
    """featurizer + upsampler + fusion, as `report` and the plots name probes."""
    model = metadata["config"]["model"]
    featurizer = (metadata.get("featurizer_provenance") or {}).get("name", "?")
    return f"{featurizer} + {model['upsampler']['name']} + {model['fusion']}"
