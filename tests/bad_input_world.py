"""What the bad-input tests break: good stores, a run and an evaluation, all made for real once per session, and
the helpers that damage copies of them and check that nothing already written changed."""

from __future__ import annotations

import hashlib
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner, Result
from dataset_trees import box, write_image, write_mask
from launch import ISEGPROBE
from stores import builtin_store, random_vit_store

from isegprobe.cache import CachedDataset
from isegprobe.cli import main
from isegprobe.config_loading import load_train_config
from isegprobe.training import train

SIZE = 56


class World:
    """Good stores (the test split in shards of 4 items), an untrained run and its evaluation."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = builtin_store(root / "cache", size=SIZE, items_per_shard=4)
        self.train_store = builtin_store(root / "cache", split="train", size=SIZE)
        self.store_112 = builtin_store(root / "cache_112", size=112)
        self.store_patch16 = random_vit_store(root / "cache_p16", "builtin", None, "test", 64, "identity",
                                              featurizer="vit_small_patch16_224")  # fmt: skip
        config = load_train_config("quickstart", ["schedule.max_iters=0"])
        train(config, CachedDataset(self.train_store), root / "run", device="cpu", progress=False)
        self.run = root / "run"
        self.results = root / "results"
        evaluated = invoke("evaluate", "--checkpoint", self.run, "--store", self.store, "--max-clicks", "2",
                           "--out", self.results)  # fmt: skip
        assert evaluated.exit_code == 0, evaluated.output

    def images(self, name: str, damage: Callable[[Path], None]) -> Path:
        """A custom dataset folder of two images with one mask each, then `damage(folder)`."""
        folder = self.root / name
        for index in range(2):
            write_image(folder / "images" / f"im{index}.jpg", 28, 28, seed=index)
            write_mask(folder / "masks" / f"im{index}.png", box(28, 28, 4, 4, 20, 20))
        damage(folder)
        return folder

    def damaged_store(self, name: str, damage: Callable[[Path], None], store: Path | None = None) -> Path:
        """A copy of `store` (the test split's) under `name`, then `damage(copy)`."""
        store = store or self.store
        copy = self.root / name / store.name
        shutil.copytree(store, copy)
        damage(copy)
        return copy

    def run_copy(self, name: str) -> Path:
        copy = self.root / name
        shutil.copytree(self.run, copy)
        return copy


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` and a hash of its bytes; lock files (beside stores and runs) are not outputs."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file() and path.suffix != ".lock"
    }


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    changed = sorted(name for name, digest in before.items() if after.get(name) != digest)
    assert not changed, f"files written before the command changed or vanished: {changed[:5]}"


def remove_chunk_file(array: str, shard: int) -> Callable[[Path], None]:
    """An interrupted copy: one shard file of one array never arrived."""

    def damage(store: Path) -> None:
        shutil.rmtree(store / array / "c" / str(shard))

    return damage


def scramble_chunk_file(array: str, shard: int, end: int = 400) -> Callable[[Path], None]:
    """Bytes overwritten inside a shard file from its first compressed chunk on, up to byte `end` (negative: from
    the end, sparing the shard's index): the file is there, its data do not decode."""

    def damage(store: Path) -> None:
        path = next(p for p in (store / array / "c" / str(shard)).rglob("*") if p.is_file())
        data = bytearray(path.read_bytes())
        data[64:end] = bytes(value ^ 0x5A for value in data[64:end])
        path.write_bytes(bytes(data))

    return damage


def edit_attrs(**changes: object) -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        group = zarr.open_group(str(store), mode="r+")
        for key, value in changes.items():
            group.attrs[key] = value

    return damage


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A small, well-formed PNG whose header declares width x height pixels (its data would not fill them)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def with_small_shared_memory(arguments: list[object], size: str) -> tuple[int, str]:
    """(exit status, output) of the command in its own process and mount namespace, whose /dev/shm is a tmpfs of
    `size` (mount's words, e.g. 200k): shared memory that is really full, as in a container given too little.
    Skipped where this process may not make a mount namespace (that needs root, as in CI's container)."""
    tried = subprocess.run(["unshare", "-m", "true"], capture_output=True) if shutil.which("unshare") else None
    if tried is None or tried.returncode != 0:
        pytest.skip("no mount namespace for a small /dev/shm here (unshare -m needs root)")
    command = " ".join(shlex.quote(str(part)) for part in (ISEGPROBE, *arguments))
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs /dev/shm && exec {command}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def with_file_limit(arguments: list[object], limit: int) -> tuple[int, str]:
    """(exit status, output) of the command in its own process, allowed files of `limit` bytes at most: a write
    beyond fails as on a full disk (EFBIG instead of ENOSPC, the same error path), the rest runs for real."""

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    done = subprocess.run(
        [ISEGPROBE, *map(str, arguments)], capture_output=True, text=True, preexec_fn=set_limit, timeout=300
    )
    return done.returncode, done.stdout + done.stderr
