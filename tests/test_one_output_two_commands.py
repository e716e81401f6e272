"""Two commands on one output, and an output that cannot take what is written: a training run folder is held by the
command that writes it, a second one stops naming the holder, and a holder killed with SIGKILL blocks nothing (the
kernel drops its lock); commands that read a store read it together; a checkpoint whose files cannot all be written
leaves the one before it whole. The store's refusals (a second extraction, an extraction while a command reads, a
read while one extracts, a full disk) are in test_bad_inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from bad_input_world import SIZE, World, assert_unchanged, invoke, snapshot, with_file_limit
from launch import hold_lock

from isegprobe.locks import lock_path


def test_a_run_folder_is_held_for_the_command_and_a_killed_holder_blocks_nothing(world: World) -> None:
    run = world.run_copy("held_run")
    holder = hold_lock(run)
    try:
        before = snapshot(run)
        refused = invoke("train", "--resume", "--out", run, "--max-iters", "1")
        assert refused.exit_code == 1, refused.output
        assert f"held_run: in use by another isegprobe command (PID {holder.pid} on " in refused.output
        assert_unchanged(before, snapshot(run))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    resumed = invoke("train", "--resume", "--out", run, "--max-iters", "1")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "last.json").read_text())["step"] == 1


def test_a_checkpoint_whose_files_cannot_all_be_written_leaves_the_previous_one_whole(world: World) -> None:
    """A disk that takes the new weights but not the optimizer state after them: the checkpoint of the step
    before stays, all its files, and nothing of the new one (the weights alone would not resume)."""
    run = world.run_copy("half_written_run")
    names = ("last.safetensors", "last.optim.safetensors", "last.json")
    before = {name: (run / name).read_bytes() for name in names}
    weights_size = len(before["last.safetensors"])  # the optimizer state after a step is twice the weights
    code, output = with_file_limit(["train", "--resume", "--out", run, "--max-iters", "1"], weights_size + 100_000)
    assert code == 1, output
    assert "half_written_run/last.optim.safetensors: cannot write (File too large)" in output
    assert "Traceback" not in output
    assert {name: (run / name).read_bytes() for name in names} == before
    assert not list(run.glob("*.pending"))


def test_commands_read_a_store_together_and_the_last_to_end_removes_its_lock_file(world: World) -> None:
    reader = hold_lock(world.store, shared=True)
    try:
        beside = invoke("evaluate", "--checkpoint", world.run, "--store", world.store, "--max-clicks", "1",
                        "--out", world.root / "read_beside")  # fmt: skip
        assert beside.exit_code == 0, beside.output
        assert lock_path(world.store).exists(), "the other reader still holds it"
    finally:
        reader.send_signal(signal.SIGKILL)  # a killed reader leaves its file, holding nothing
        reader.wait()
    alone = invoke("evaluate", "--checkpoint", world.run, "--store", world.store, "--max-clicks", "1",
                   "--out", world.root / "read_alone")  # fmt: skip
    assert alone.exit_code == 0, alone.output
    assert not lock_path(world.store).exists()


def test_a_store_in_a_folder_this_user_cannot_write_is_read_without_a_lock(system_temporary_folder: Path) -> None:
    """A colleague's cache, or a read-only mount: the reader cannot create the lock file, and reads without it. Root
    writes any folder, so where the tests run as root the reader is a child process that runs as nobody."""
    folder = Path(tempfile.mkdtemp(prefix="isegprobe-read-only-", dir=system_temporary_folder))  # others may enter
    try:
        store = folder / "shared_cache" / "store.zarr"
        store.mkdir(parents=True)
        folder.chmod(0o755)
        store.parent.chmod(0o555)
        reader = (
            "import sys\nfrom pathlib import Path\nfrom isegprobe.locks import lock_path, shared_locks\n"
            "with shared_locks(Path(sys.argv[1])):\n    print('lock file', lock_path(Path(sys.argv[1])).exists())\n"
        )
        as_nobody = []
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root, and no setpriv to read as another user")
            as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        command = [*as_nobody, sys.executable, "-c", reader, str(store)]
        read = subprocess.run(command, capture_output=True, text=True)
        if "No module named 'isegprobe'" in read.stderr:
            pytest.skip("nobody cannot read this checkout")
        assert read.returncode == 0, read.stderr
        assert read.stdout.strip() == "lock file False"
    finally:
        store.parent.chmod(0o755)
        shutil.rmtree(folder)


@pytest.mark.parametrize("shared", [False, True], ids=["written", "read"])
def test_an_extraction_refuses_a_held_store_before_it_builds_its_featurizer(
    world: World, shared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal came after the featurizer was built: 36 s under load for a ViT-S, minutes for a large model."""
    import isegprobe.featurizers

    def not_to_be_built(*args, **kwargs) -> None:
        raise AssertionError("the featurizer was built before the lock was asked for")

    monkeypatch.setattr(isegprobe.featurizers, "create_featurizer", not_to_be_built)
    holder = hold_lock(world.store, shared)
    try:
        options = ["--dataset", "builtin", "--size", str(SIZE), "--items-per-shard", "4", "--workers", "0"]
        refused = invoke(
            "extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", "random", *options,
            "--out", world.store.parent, "--overwrite",
        )  # fmt: skip
        said = "being read by other isegprobe commands" if shared else "in use by another isegprobe command"
        assert refused.exit_code == 1 and f"{world.store.name}: {said} (PID {holder.pid}" in refused.output, (
            refused.output
        )
    finally:
        holder.kill()
        holder.wait()
