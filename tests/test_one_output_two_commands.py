"""Two commands on one output: a training run folder is held by the command that writes it, a second one stops
naming the holder, and a holder killed with SIGKILL blocks nothing (the kernel drops its lock). The store's own
case (a second extraction) is in test_bad_inputs."""

from __future__ import annotations

import json
import signal

from bad_input_world import World, assert_unchanged, invoke, snapshot
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
