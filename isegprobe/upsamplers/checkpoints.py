"""Where upsampler authors keep their weights inside the checkpoint files they publish.

The files come in a few layouts: a bare state dict (LiFT, AnyUp, LoftUp on Hugging Face), a PyTorch Lightning
checkpoint whose `state_dict` also holds the frozen backbone and training-only modules (FeatUp, LoftUp's Google Drive
files), JAFAR's `{"jafar": state_dict}`, and state dicts saved from DistributedDataParallel with a `module.` prefix;
`isegprobe.state_dicts` reads them all.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

# FeatUp and LoftUp train their upsampler behind a ChannelNorm that their Lightning module keeps as `model.1`
# (`model.0` is the frozen backbone); their hub wrappers call the same two parts `channelnorm` and `upsampler`.
NORM_AND_UPSAMPLER = {"model.1.norm.": "channelnorm.norm.", "channelnorm.": "channelnorm.", "upsampler.": "upsampler."}


def rename_prefixes(state: Mapping[str, Tensor], renames: Mapping[str, str]) -> dict[str, Tensor]:
    """Keep the keys under the `renames` prefixes, renamed; drop the rest (a backbone, a training-only module)."""
    kept = {}
    for key, value in state.items():
        for source, target in renames.items():
            if key.startswith(source):
                kept[target + key.removeprefix(source)] = value
                break
    return kept
