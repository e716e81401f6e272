"""Feature stores for tests, extracted for real with a random-weight ViT-S/14 (the quickstart's featurizer).

A store of the built-in data is extracted once per test session and copied to each test that asks for it: about
seventy calls ask for some twenty distinct stores, each of which takes seconds to extract (its copy, milliseconds). A
store is a folder whose bytes do not depend on where it lies, and every extraction of one request in a session writes
the same bytes, so a copy is what the test's own extraction would have written; the extraction itself is tested where
tests call `extract` or the command.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import shutil
from pathlib import Path

from isegprobe.cache.extract import ExtractionRequest, extract

# A store of schema 1, written by the extraction before pixels were stored once (tests/data/README.md)
SCHEMA1_STORE = Path(__file__).parent / "data" / "schema1-vit_small_patch14_dinov2-builtin-test-28.zarr"

_shared_folder: Path | None = None


def share_builtin_stores_in(folder: Path | None) -> None:
    """Where this session keeps the built-in stores it extracted (a folder that every xdist worker of the session
    sees), or None to extract each one where it is asked for."""
    global _shared_folder
    _shared_folder = folder


def random_vit_store(
    out: Path,
    dataset: str,
    root: Path | None,
    split: str,
    size: int,
    views: str = "identity,hflip",
    featurizer: str = "vit_small_patch14_dinov2",
    shared: bool = True,
    **options,
) -> Path:
    """Extract `dataset` (read from `root`) with a random-weight ViT-S/14 (or `featurizer`) and return the store.
    A store of the built-in data is the session's copy unless `shared` is false (a test that changes how extraction
    works first needs its own extraction)."""
    request = ExtractionRequest(
        featurizer=featurizer,
        weights="random",
        dataset=dataset,
        root=None if root is None else str(root),
        split=split,
        size=size,
        views=views,
        out=str(out),
        workers=0,
        **options,
    )
    if shared and root is None and _shared_folder is not None:
        return _copy_of_shared(request, Path(out), _shared_folder)
    return extract(request).path


def builtin_store(
    out: Path, split: str = "test", size: int = 56, views: str = "identity,hflip", shared: bool = True, **options
) -> Path:
    """The built-in data's store."""
    return random_vit_store(out, "builtin", None, split, size, views, shared=shared, **options)


def _copy_of_shared(request: ExtractionRequest, out: Path, shared: Path) -> Path:
    """The request's store, extracted into `shared` by the first test of the session that asks for it (the others
    wait for it on a lock), copied into `out`. Where `out` holds a store of that name already, the extraction runs
    there as it would have (a resume, or a refusal)."""
    key = dataclasses.asdict(dataclasses.replace(request, out=""))
    folder = shared / hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "extracted").is_file():  # an extraction that failed half way resumes
            (folder / "extracted").write_text(extract(dataclasses.replace(request, out=str(folder))).path.name)
    store = folder / (folder / "extracted").read_text()
    destination = out / store.name
    if destination.exists():
        return extract(request).path
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(store, destination)
    return destination
