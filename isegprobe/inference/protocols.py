"""Named evaluation protocols: which settings make numbers that sit in the same table as someone else's.

- `cache`: isegprobe's own. The probe reads the store's cached whole-image view; zoom-in, flips, the threshold and
  the click budget are the command's flags (defaults: none, none, 0.5, 20), and `--checkpoint RUN` takes the run's
  best checkpoint.
- `iSegProbe`: the research code's evaluate.py as shipped (eval_mode fixed224, NoBRS, print_ious true): RITM's
  ZoomIn with skip_clicks -1 on a 224 x 224 (the probe's working size) stretched crop, in RITM's geometry (crops
  resized with the corner pixels aligned, clicks scaled by the size ratio, click disks around unrounded centres),
  logits averaged with the horizontally flipped crop before the sigmoid, masks at probability > 0.5, 20 clicks for
  every object (its print_ious sets the target IoU to 1.01, so no object stops early), everything in float32 with
  its deterministic kernels and its rounding (`model.research_precision`: MaskCLIP in float16 on a GPU, attention
  written out where its model copies write it), one object (and its mirror) per forward as it runs them, and the
  last checkpoint of a run. The featurizer runs on every crop, as the research code's backbone does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from isegprobe.errors import UserError


@dataclass(frozen=True)
class EvaluationProtocol:
    """`fixed`: the request settings the protocol sets (a flag that says otherwise is refused); `checkpoint`: which
    checkpoint of a run folder it evaluates; `exact`: float32 throughout (no autocast, no float16 features) with
    deterministic kernels;
    `ritm_geometry`: zoom-in crops mapped as RITM maps them."""

    name: str
    fixed: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = "best"
    exact: bool = False
    ritm_geometry: bool = False


PROTOCOLS = {
    "cache": EvaluationProtocol("cache"),
    "iSegProbe": EvaluationProtocol(
        "iSegProbe",
        fixed={"zoom_in": True, "flip": True, "threshold": 0.5, "max_clicks": 20, "online": True, "batch_size": 1},
        checkpoint="last",
        exact=True,
        ritm_geometry=True,
    ),
}
DEFAULT_PROTOCOL = "cache"


def get_protocol(name: str) -> EvaluationProtocol:
    """The protocol called `name` (case-insensitive)."""
    for key, protocol in PROTOCOLS.items():
        if key.lower() == name.lower():
            return protocol
    raise UserError(f"--protocol: unknown {name!r}; known: {', '.join(PROTOCOLS)}")


def conflicts(protocol: EvaluationProtocol, given: dict[str, Any]) -> list[str]:
    """The settings in `given` (those the user set explicitly) that the protocol fixes to another value."""
    return [
        f"--{key.replace('_', '-')} {given[key]!r} (it uses {value!r})"
        for key, value in protocol.fixed.items()
        if key in given and given[key] != value
    ]
