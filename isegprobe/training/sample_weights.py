"""RITM's per-image sampling weights for SBD: images the probe finds easy are drawn less often.

RITM (and iSegProbe after it) scored every SBD training image once and draws training images with probability
proportional to (1 - score) ** gamma (gamma 1.25), with replacement. The scores ship as RITM's
`assets/sbd_samples_weights.pkl`, a pickled list of (index, image name, numpy float32 score), read here without
unpickling anything but those values; the same table as CSV (`index,image,score`) reads too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from isegprobe.data.restricted_pickle import read_ritm_pickle
from isegprobe.errors import UserError
from isegprobe.home_paths import expand_home


def read_sample_scores(path: str | Path) -> dict[str, float]:
    """image name -> score, from RITM's pickle or a CSV with columns index, image, score."""
    path = expand_home(path)
    if not path.is_file():
        raise UserError(f"data.sample_weights: no file {path}")
    try:
        if path.suffix == ".csv":
            rows = [(row["image"], row["score"]) for row in csv.DictReader(io.StringIO(path.read_text()))]
        else:
            rows = [(entry[1], entry[2]) for entry in read_ritm_pickle(path)]
        scores = {str(name): float(score) for name, score in rows}
    except (UnicodeDecodeError, KeyError, IndexError, TypeError, ValueError) as error:
        raise UserError(
            f"data.sample_weights: {path} is not a table of (index, image, score) rows, as RITM's "
            f"sbd_samples_weights.pkl or a CSV with those columns ({error})"
        ) from None
    if not scores:
        raise UserError(f"data.sample_weights: {path} holds no scores")
    outside = next((name for name, score in scores.items() if not 0.0 <= score <= 1.0), None)
    if outside is not None:
        raise UserError(
            f"data.sample_weights: {path}: image {outside} has the score {scores[outside]}; scores must lie in [0, 1] "
            "(a weight is (1 - score) ** gamma: a score above 1 made a complex number, one below 0 a weight above 1)"
        )
    return scores


def draw_probabilities(item_ids: Sequence[str], scores: dict[str, float], gamma: float) -> np.ndarray:
    """Each item's probability of being drawn: (1 - score) ** gamma, normalized over the store's items."""
    missing = [item for item in item_ids if item not in scores]
    if missing:
        raise UserError(
            f"data.sample_weights: no score for {len(missing)} of the store's {len(item_ids)} images "
            f"(e.g. {', '.join(missing[:3])}); the table must score every training image"
        )
    weights = np.array([(1.0 - scores[item]) ** gamma for item in item_ids], dtype=np.float64)
    if not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        raise UserError("data.sample_weights: the scores give no positive weights (scores must lie in [0, 1])")
    return weights / weights.sum()
