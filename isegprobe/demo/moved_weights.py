"""Featurizer weights files given to the demo with `--weights`, each matched to the probes it belongs to.

A checkpoint records the path of its featurizer's weights file and the file's sha256. On another machine (a probe
trained on a cluster, shown on a laptop) that path is not there. The demo may show several probes on several
featurizers, so a given file is not tied to a probe by the order of the options: it goes to every probe whose
checkpoint records its sha256, and a file that goes to none is refused, since it would be read for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isegprobe.errors import UserError
from isegprobe.hashing import file_sha256
from isegprobe.home_paths import expand_home


def recorded_sha256(metadata: Mapping[str, Any]) -> str | None:
    """The sha256 of the weights file a checkpoint's featurizer was built from (None for hub or random weights)."""
    return (metadata.get("featurizer_provenance") or {}).get("weights_sha256")


@dataclass(frozen=True)
class GivenWeights:
    """The `--weights` files, by their sha256."""

    paths_by_sha256: dict[str, str]

    @classmethod
    def read(cls, paths: Sequence[str]) -> GivenWeights:
        """Hash each file once (a ViT-L/14 file takes a few seconds); the paths were checked as readable files."""
        return cls({file_sha256(expand_home(path)): path for path in paths})

    def path_for(self, metadata: Mapping[str, Any]) -> str | None:
        """The given file a checkpoint's featurizer was built from, or None (its recorded one is used)."""
        sha256 = recorded_sha256(metadata)
        return None if sha256 is None else self.paths_by_sha256.get(sha256)

    def require_each_used(self, checkpoints: Mapping[str, Mapping[str, Any]]) -> None:
        """A UserError for a given file that no probe's featurizer was built from, listing what each checkpoint
        (by its path) records, so that the right file can be found."""
        wanted = {recorded_sha256(metadata) for metadata in checkpoints.values()}
        unused = [path for sha256, path in self.paths_by_sha256.items() if sha256 not in wanted]
        if not unused:
            return
        records = "\n  ".join(
            f"{checkpoint}: {_recorded_weights(metadata)}" for checkpoint, metadata in checkpoints.items()
        )
        raise UserError(
            f"--weights {', '.join(unused)}: no probe's featurizer was built from this file (its sha256 is none of "
            f"those the checkpoints record); their featurizers' weights:\n  {records}"
        )


def _recorded_weights(metadata: Mapping[str, Any]) -> str:
    provenance = metadata.get("featurizer_provenance") or {}
    sha256 = provenance.get("weights_sha256")
    weights = f"{provenance.get('weights')} (sha256 {sha256})" if sha256 else str(provenance.get("weights"))
    return f"{provenance.get('name')}, weights {weights}"
