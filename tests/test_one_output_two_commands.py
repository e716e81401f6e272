"""Two commands on one output, and an output that cannot take what is written: a training run folder is held by the
command that writes it, a second one stops naming the holder, and a holder killed with SIGKILL blocks nothing (the
kernel drops its lock); a checkpoint whose files cannot all be written leaves the one before it whole. The store's
cases (a second extraction, a full disk) are in test_bad_inputs."""

from __future__ import annotations

import json
import signal

from bad_input_world import World, assert_unchanged, invoke, snapshot, with_file_limit
from launch import hold_lock


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
