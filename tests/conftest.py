"""Shared fixtures: the real GrabCut benchmark from ../shared, and small trees made from it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import torch
from stores import share_builtin_stores_in

from isegprobe.data.image_io import MAX_PIXELS_ENV

GRABCUT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "GrabCut"


SYSTEM_TEMPORARY_FOLDER = Path(tempfile.gettempdir())  # taken when pytest loads this file, before the fixture below


@pytest.fixture(scope="session")
def system_temporary_folder() -> Path:
    """The machine's temporary folder, which every user may enter (pytest's own folders are private to the user)."""
    return SYSTEM_TEMPORARY_FOLDER


@pytest.fixture(scope="session", autouse=True)
def temporary_files_under_pytests_folder(tmp_path_factory: pytest.TempPathFactory):
    """What the libraries and the processes the tests start write to the temporary folder (torchrun's log folders,
    W&B's offline media, loader workers' sockets) goes under pytest's own folder, which pytest clears of old runs,
    instead of piling up in /tmp at every run of the suite."""
    folder = tmp_path_factory.mktemp("temporary-files")
    patch = pytest.MonkeyPatch()
    patch.setenv("TMPDIR", str(folder))
    patch.setattr(tempfile, "tempdir", None)  # Python's cached answer, taken again from TMPDIR
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_per_xdist_worker():
    """xdist starts a worker per core, and each would otherwise run torch's operators on every core: the workers'
    threads then outnumber the cores and spin against each other and against the commands the tests start, which
    made small in-process tests four times slower in the full suite than alone. The commands keep their own
    threads."""
    with torch_on_one_thread() if os.environ.get("PYTEST_XDIST_WORKER") else nullcontext():
        yield


@pytest.fixture(scope="session", autouse=True)
def builtin_stores_extracted_once(tmp_path_factory: pytest.TempPathFactory):
    """`stores.builtin_store` extracts each distinct store once a session, into a folder of the session's that all
    its xdist workers share (the parent of each worker's own), and copies it to the tests that ask for it."""
    session = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        session = session.parent
    share_builtin_stores_in(session / "builtin-stores")
    yield
    share_builtin_stores_in(None)


@pytest.fixture(autouse=True)
def each_test_keeps_its_pixel_limit_to_itself():
    """`--max-pixels` sets the limit for the whole process (so that loader workers see it); a command run in-process
    by one test must not move the limit of the tests after it."""
    before = os.environ.get(MAX_PIXELS_ENV)
    yield
    if before is None:
        os.environ.pop(MAX_PIXELS_ENV, None)
    else:
        os.environ[MAX_PIXELS_ENV] = before


@pytest.fixture(autouse=True)
def no_users_dataset_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The user's own datasets.yaml ($ISEGPROBE_DATASETS, ~/.config/isegprobe/) must not reach a test: roots then
    default to data/<folder>, options to the shipped ones, unless the test writes its own file."""
    monkeypatch.delenv("ISEGPROBE_DATASETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "no-user-config"))


@pytest.fixture(scope="session")
def grabcut_root() -> Path:
    if not (GRABCUT_ROOT / "data_GT").is_dir():
        pytest.skip(f"real GrabCut data not found at {GRABCUT_ROOT} (expected ../shared/data/GrabCut beside the repo)")
    return GRABCUT_ROOT


@pytest.fixture()
def grabcut_three(grabcut_root: Path, tmp_path: Path) -> Path:
    """Three real GrabCut images (one .bmp, one .JPG, one .jpg) in the GrabCut layout, in a temporary folder."""
    root = tmp_path / "GrabCut3"
    (root / "data_GT").mkdir(parents=True)
    (root / "boundary_GT").mkdir()
    images = sorted((grabcut_root / "data_GT").iterdir())
    chosen = [next(p for p in images if p.suffix == suffix) for suffix in (".bmp", ".JPG", ".jpg")]
    for image in chosen:
        shutil.copy(image, root / "data_GT" / image.name)
        shutil.copy(grabcut_root / "boundary_GT" / f"{image.stem}.bmp", root / "boundary_GT" / f"{image.stem}.bmp")
    return root


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Good stores, a run and an evaluation for the bad-input tests to damage copies of (see bad_input_world)."""
    from bad_input_world import World

    return World(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small CPU models gain nothing from threads, and threads spin badly when the cores are shared: modules of
    small featurizers ask for it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    with torch_on_one_thread():
        yield


@contextmanager
def torch_on_one_thread() -> Iterator[None]:
    """torch's operators on one thread inside `with`, on as many as before outside."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
