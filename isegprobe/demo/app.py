"""From checkpoints and some images to the demo's web app: the probes, their featurizers, a session, the server."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from fastapi import FastAPI
from torch import nn

from isegprobe.demo.catalog import Catalog
from isegprobe.demo.moved_weights import GivenWeights
from isegprobe.demo.server import create_app
from isegprobe.demo.session import DemoProbe, DemoSession
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.result_labels import probe_label, told_apart
from isegprobe.inference.results import probe_identity
from isegprobe.inference.runner import checkpoint_featurizer
from isegprobe.training.checkpoint import load_probe, resolve_checkpoint


def build_app(
    checkpoints: Sequence[str],
    catalog: Catalog,
    device: str = "cpu",
    zoom_in: bool = False,
    threshold: float = 0.5,
    host: str = "127.0.0.1",
    port: int = 8765,
    featurizer_weights: Sequence[str] = (),
) -> FastAPI:
    """The demo app for the probes at `checkpoints` (side by side, on the same clicks), listing `catalog`'s images,
    for a server bound to `host`:`port`; `featurizer_weights` as `demo_probes` takes them."""
    probes = demo_probes(checkpoints, torch.device(device), featurizer_weights)
    return create_app(DemoSession(probes, threshold, zoom_in), catalog, host, port)


def demo_probes(
    checkpoints: Sequence[str], device: torch.device, featurizer_weights: Sequence[str] = ()
) -> list[DemoProbe]:
    """The probes at `checkpoints`, each with its featurizer and a label that tells it apart on the page. Probes on
    the same featurizer share one copy of it. `featurizer_weights`: where the weights files the checkpoints record
    are now (`--weights`), each going to the probes whose checkpoints record its sha256."""
    weights = [resolve_checkpoint(checkpoint)[0].resolve() for checkpoint in checkpoints]
    loaded = [load_probe(path, device=device) for path in weights]
    given = GivenWeights.read(featurizer_weights)
    given.require_each_used({str(path): metadata for path, (_, metadata) in zip(weights, loaded, strict=True)})
    featurizers: dict[str, nn.Module] = {}
    identities, runners = [], []
    for probe, metadata in loaded:
        provenance = metadata.get("featurizer_provenance") or {}
        # A featurizer in research precision keeps float16 weights on a GPU, so it is shared only by such probes.
        key = (
            f"{provenance.get('name')}|{provenance.get('weights')}|{provenance.get('weights_sha256')}|"
            f"{probe.config.research_precision}"
        )
        if key not in featurizers:
            featurizers[key] = checkpoint_featurizer(metadata, given.path_for(metadata)).to(device)
        featurizer = featurizers[key]
        if probe.needs_featurizer:
            probe.attach_featurizer(featurizer)
        preprocessing = metadata["preprocessing"]
        predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], device, featurizer)
        size, resize = int(preprocessing["size"]), preprocessing.get("resize", "stretch")
        identities.append(probe_identity(metadata))
        runners.append((predictor, size, resize))
    # Two runs of one recipe, or the best and last of one run, read the same as probes: their run folders and
    # checkpoint names tell them apart on the page.
    names = [probe_label(identity, path.parent) for identity, path in zip(identities, weights, strict=True)]
    labels = told_apart(names, [[path.parent.name, path.stem] for path in weights])
    return [DemoProbe(label, *runner) for label, runner in zip(labels, runners, strict=True)]
