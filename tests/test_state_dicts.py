"""Weights files read by `read_state_dict` and loaded by `load_strictly`: what they may hold, how a misfit is told."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from isegprobe.errors import UserError
from isegprobe.featurizers import create_featurizer
from isegprobe.state_dicts import load_strictly, read_state_dict

# Tensors that torch.save keeps as they are and that are not dense ones with values, with how the message names them.
NOT_DENSE: dict[str, tuple[Callable[[Tensor], Tensor], str]] = {
    "sparse_coo": (Tensor.to_sparse, "sparse_coo"),
    "sparse_csr": (Tensor.to_sparse_csr, "sparse_csr"),
    "meta": (lambda tensor: torch.empty_like(tensor, device="meta"), "meta: a shape without values"),
    "nested": (lambda tensor: torch.nested.nested_tensor([tensor[0], tensor[1, :1]]), "nested"),
}


def linear_state(change: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """A state dict of `nn.Linear(3, 2)` with its weight changed by `change`."""
    state = nn.Linear(3, 2).state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch calls sparse CSR beta and nested tensors a prototype
        state["weight"] = change(state["weight"])
    return state


@pytest.mark.parametrize("layout", NOT_DENSE)
def test_a_weights_file_with_a_tensor_that_is_not_dense_is_refused_by_file_and_key(tmp_path: Path, layout: str) -> None:
    # The finite-values check failed on it with a 130-line NotImplementedError (sparse) or RuntimeError traceback.
    change, named = NOT_DENSE[layout]
    path = tmp_path / "weights.pth"
    torch.save(linear_state(change), path)
    with pytest.raises(UserError) as error:
        read_state_dict(path)
    assert str(error.value) == (
        f"weights file {path} holds tensors that are not dense (strided), as weights must be: weight ({named})"
    )


def test_torch_does_not_warn_of_the_sparse_tensors_of_a_file_that_is_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(linear_state(Tensor.to_sparse), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError, match="not dense"):
            read_state_dict(path)
    assert not [str(warning.message) for warning in caught]


@pytest.mark.parametrize("layout", NOT_DENSE)
def test_loading_a_tensor_that_is_not_dense_is_refused_by_key(layout: str) -> None:
    """import-seed loads the tensors of a research checkpoint, which `read_state_dict` did not read, this way."""
    change, named = NOT_DENSE[layout]
    with pytest.raises(UserError) as error:
        load_strictly(nn.Linear(3, 2), linear_state(change), "seed.pth: its weights do not fit")
    assert str(error.value) == f"seed.pth: its weights do not fit; not dense (strided) tensors: weight ({named})"


def test_the_featurizer_of_a_weights_file_with_a_sparse_tensor_is_refused_by_file_and_key(tmp_path: Path) -> None:
    """extract-features --weights FILE, as the report had it: a ViT whose final norm's bias was saved sparse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = create_featurizer("vit_small_patch14_dinov2", weights="random").model.state_dict()
    state["norm.bias"] = state["norm.bias"].to_sparse()
    path = tmp_path / "feat_sparse.pth"
    torch.save(state, path)
    message = f"weights file {path} holds tensors that are not dense (strided), as weights must be: norm.bias"
    with pytest.raises(UserError, match=re.escape(message) + r" \(sparse_coo\)$"):
        create_featurizer("vit_small_patch14_dinov2", weights=str(path))


class MaskedLinear(nn.Linear):
    """A layer with a buffer of infinities, as attention masks are."""

    def __init__(self) -> None:
        super().__init__(3, 2)
        self.register_buffer("mask", torch.full((2, 3), float("-inf")))


def test_only_parameters_must_be_finite_buffers_may_hold_infinities() -> None:
    state = MaskedLinear().state_dict()
    load_strictly(MaskedLinear(), state, "masked.pth does not fit")
    state["bias"] = torch.tensor([0.0, float("inf")])
    with pytest.raises(UserError, match=r"^masked.pth does not fit; NaN or infinite values in: bias$"):
        load_strictly(MaskedLinear(), state, "masked.pth does not fit")
