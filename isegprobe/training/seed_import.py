"""Turn a probe trained by the iSegProbe research code into an isegprobe run directory, so that `evaluate` reads it.

The checkpoint names the research code's backbone, click encoder, upsampler and crop size; isegprobe rebuilds the
same featurizer (the official DINOv2, or timm's ViT with its attention keys, ...) with the research code's input rule
(ImageNet mean/std for every backbone) and the featurizer weights the probe was trained on. A store, when given,
supplies that featurizer's provenance instead and must match it (a probe evaluated from the cache).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from isegprobe import __version__, featurizers
from isegprobe.cache import FeatureStore
from isegprobe.cache.attrs import preprocessing_attrs
from isegprobe.cache.schema import ARCHITECTURE_IDENTITY_KEYS, check_same_featurizer
from isegprobe.cache.store import refuse_output_inside_a_store
from isegprobe.config_loading import config_to_dict, load_train_config
from isegprobe.errors import UserError
from isegprobe.hashing import file_sha256
from isegprobe.locks import exclusive_lock
from isegprobe.model import ISProbe, needs_featurizer_online
from isegprobe.output_files import RUN_FILES
from isegprobe.state_dicts import load_strictly
from isegprobe.training.checkpoint import save_checkpoint
from isegprobe.training.seed_checkpoints import SeedProbe, read_seed_checkpoint, seed_keys_to_isegprobe, seed_probe

# The research code's base model standardizes every backbone's input with ImageNet's statistics.
SEED_NORMALIZATION = "imagenet"


def import_seed_probe(
    seed_path: str | Path,
    run_dir: str | Path,
    weights: str = "hub",
    upsampler_weights: str | None = None,
    store_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write `run_dir/last.*` from the iSegProbe checkpoint at `seed_path`; returns the checkpoint's metadata.

    `weights`: the featurizer's weights ("hub", or the file the probe was trained with); `upsampler_weights`: the
    authors' file of a frozen learned upsampler, which the research code's checkpoints do not hold; `store_path`: a
    store of the same featurizer at the probe's crop size, whose provenance then stands for the featurizer.
    """
    seed_path, run_dir = Path(seed_path), Path(run_dir)
    refuse_output_inside_a_store(run_dir)
    _refuse_a_run_folder(run_dir)  # before the featurizer is built; again under the lock, where it decides
    seed = seed_probe(read_seed_checkpoint(seed_path), str(seed_path))
    if store_path is None:
        featurizer = featurizers.create_featurizer(seed.featurizer, weights=weights, normalization=SEED_NORMALIZATION)
        provenance = featurizer.provenance
    else:
        with warnings.catch_warnings():  # only the architecture is read from it; the store's weights stand
            warnings.simplefilter("ignore", featurizers.RandomWeightsWarning)
            featurizer = featurizers.create_featurizer(seed.featurizer, "random", SEED_NORMALIZATION)
        provenance = _store_provenance(store_path, seed, featurizer.provenance)
    if seed.size % featurizer.patch_size:
        raise UserError(
            f"{seed_path}: trained on {seed.size} px crops, which {seed.featurizer}'s patch size "
            f"{featurizer.patch_size} does not divide: its featurizer cannot run at that size"
        )
    overrides = [*seed.preset_overrides, *seed.overrides, f"data.size={seed.size}"]
    if upsampler_weights is not None:  # a path, not YAML: a file named null or 1e3 stays its name
        overrides.append(f"model.upsampler.weights={json.dumps(upsampler_weights)}")
    config = load_train_config(seed.preset, overrides)
    fusion = config.model.fusion
    early_fusion = needs_featurizer_online(config.model)
    dims = {
        "feature_dim": int(provenance["dim"]),
        "patch_size": int(provenance["patch_size"]),
        "token_dim": int(provenance["embed_dim"] if early_fusion else provenance["dim"]),
    }
    probe = ISProbe(config.model, **dims)
    if probe.upsampler_frozen_at_random:
        raise UserError(
            f"the probe used the {config.model.upsampler.name} upsampler, frozen with its authors' weights, "
            "which iSegProbe checkpoints do not hold: pass them with --upsampler-weights PATH"
        )
    state = dict(seed.state_dict)
    if provenance["output"] == "keys":
        attention = featurizer.model.blocks[-1].attn
        seed_keys_to_isegprobe(state, attention.num_heads, attention.head_dim, fusion)
    # The upsampler keeps the weights it was built with (its authors' file, or none); the rest comes from iSegProbe's.
    upsampler = {key: value for key, value in probe.state_dict().items() if key.startswith("upsampler.")}
    misfit = f"{seed_path}: its weights do not fit a probe on {seed.featurizer}"
    load_strictly(probe, {**upsampler, **state}, misfit, name_in_file=seed.name_in_checkpoint)
    metadata = {
        "package_version": __version__,
        "config": config_to_dict(config),
        "model": probe.dims(),
        "featurizer_provenance": provenance,
        "store_path": None if store_path is None else str(Path(store_path).resolve()),
        "preprocessing": preprocessing_attrs(provenance, seed.size, "stretch"),
        "online": store_path is None or early_fusion,
        "step": 0,
        "imported_from": {"path": str(seed_path.resolve()), "sha256": file_sha256(seed_path), "preset": seed.preset},
    }
    with exclusive_lock(run_dir):
        _refuse_a_run_folder(run_dir)  # another import into the same folder may have finished meanwhile
        run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(run_dir, "last", probe, metadata)
    return metadata


def _refuse_a_run_folder(run_dir: Path) -> None:
    """Any file of a run there is refused, not only its last.json: beside another run's best.* the imported probe
    was written, and evaluation and the demo, which take a folder's best checkpoint first, loaded the other one."""
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if held:
        raise UserError(f"{run_dir} already holds a run ({', '.join(held)}); import into a new directory")


def _store_provenance(store_path: str | Path, seed: SeedProbe, built: dict[str, Any]) -> dict[str, Any]:
    """The store's featurizer provenance, after checking that it computes what iSegProbe's backbone computed, at the
    probe's crop size."""
    store = FeatureStore.open(store_path)
    provenance = dict(store.attrs["featurizer"])
    check_same_featurizer(
        built, provenance, str(store.path), trained_on="the probe's featurizer", keys=ARCHITECTURE_IDENTITY_KEYS
    )
    size = int(store.attrs["preprocessing"]["size"])
    if size != seed.size or store.attrs["preprocessing"].get("resize", "stretch") != "stretch":
        raise UserError(
            f"{store.path}: extracted at --size {size}; the probe was trained on {seed.size} px crops, stretched: "
            f"extract with --size {seed.size} --resize stretch"
        )
    return provenance
