"""Turn a probe trained by the seed into an isegprobe run directory, so that `evaluate` reads it.

The store the probe will be evaluated on supplies what the seed's checkpoint does not hold: the featurizer's
provenance (checked against the seed's backbone type), the feature dims and the working size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isegprobe import __version__
from isegprobe.cache import FeatureStore
from isegprobe.config import config_to_dict, load_train_config
from isegprobe.errors import UserError
from isegprobe.hashing import file_sha256
from isegprobe.locks import exclusive_lock
from isegprobe.model import ISProbe
from isegprobe.state_dicts import load_strictly
from isegprobe.training.checkpoint import save_checkpoint
from isegprobe.training.seed_checkpoints import read_seed_checkpoint, seed_probe


def import_seed_probe(
    seed_path: str | Path, store_path: str | Path, run_dir: str | Path, upsampler_weights: str | None = None
) -> dict[str, Any]:
    """Write `run_dir/last.*` from the seed checkpoint at `seed_path`; returns the checkpoint's metadata."""
    seed_path, run_dir = Path(seed_path), Path(run_dir)
    if (run_dir / "last.json").exists():
        raise UserError(f"{run_dir} already holds a run (last.json); import into a new directory")
    seed = seed_probe(read_seed_checkpoint(seed_path), str(seed_path))
    store = FeatureStore.open(store_path)
    provenance = dict(store.attrs["featurizer"])
    if provenance.get("output") != seed.backbone_output:
        raise UserError(
            f"{store.path}: features of a {provenance.get('output')!r} featurizer ({provenance.get('name')}), but "
            f"the probe was trained on the {seed.backbone_output!r} output of its {seed.backbone} backbone"
        )
    preprocessing = dict(store.attrs["preprocessing"])
    overrides = [*seed.overrides, f"data.size={int(preprocessing['size'])}"]
    if upsampler_weights is not None:
        overrides.append(f"model.upsampler.weights={upsampler_weights}")
    config = load_train_config("sbd_224", overrides)
    fusion = config.model.fusion
    dims = {
        "feature_dim": int(provenance["dim"]),
        "patch_size": int(provenance["patch_size"]),
        "token_dim": int(provenance["embed_dim"] if fusion == "before_backbone" else provenance["dim"]),
    }
    probe = ISProbe(config.model, **dims)
    if probe.upsampler_frozen_at_random:
        raise UserError(
            f"the probe used the {config.model.upsampler.name} upsampler, frozen with its authors' weights, "
            "which iSegProbe checkpoints do not hold: pass them with --upsampler-weights PATH"
        )
    # The upsampler keeps the weights it was built with (its authors' file, or none); the rest comes from the seed.
    upsampler = {key: value for key, value in probe.state_dict().items() if key.startswith("upsampler.")}
    load_strictly(probe, {**upsampler, **seed.state_dict}, f"{seed_path}: its weights do not fit a probe on this store")
    metadata = {
        "package_version": __version__,
        "config": config_to_dict(config),
        "model": probe.dims(),
        "featurizer_provenance": provenance,
        "store_path": str(store.path),
        "preprocessing": preprocessing,
        "online": fusion == "before_backbone",
        "step": 0,
        "imported_from": {"path": str(seed_path.resolve()), "sha256": file_sha256(seed_path)},
    }
    with exclusive_lock(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(run_dir, "last", probe, metadata)
    return metadata
