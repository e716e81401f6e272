"""`isegprobe quickstart`, the README's main job, as a user runs it: extract, train and evaluate in one command,
and a second run reuses the stores and resumes the run instead of starting over."""

from __future__ import annotations

import json

from launch import run_cli


def test_quickstart_runs_the_pipeline_and_a_second_run_resumes(tmp_path):
    """Run as the README runs it: in a folder of its own, into the default --out, `quickstart/`, which is also the
    name of the preset it trains (a folder of that name once hid the preset: every fresh machine failed)."""
    out = tmp_path / "quickstart"
    first = run_cli("quickstart", "--max-iters", "2", "--max-clicks", "3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "| builtin |" in first.stdout
    warning = "warning: vit_small_patch14_dinov2: random weights"
    assert any(line.startswith(warning) for line in first.stderr.splitlines()), first.stderr
    assert "mIoU after k clicks (builtin): 1: " in first.stdout
    builtin = json.loads((out / "results" / "results.json").read_text())["datasets"]["builtin"]
    assert builtin["num_instances"] == 26
    assert len(builtin["mIoU@k"]) == 3
    assert (out / "run" / "last.safetensors").is_file()
    assert "vit_small_patch14_dinov2 + identity + after_backbone" in (out / "results" / "iou_vs_clicks.svg").read_text()

    second = run_cli("quickstart", "--out", str(out), "--max-iters", "3", "--max-clicks", "3")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("0 new items") == 2
    assert "resuming the run" in second.stdout
    assert "step 3;" in second.stdout
    finished = run_cli("quickstart", "--out", str(out), "--max-iters", "3", "--max-clicks", "1")
    assert finished.returncode == 0, finished.stderr
    assert "has taken its 3 steps already: nothing left to train" in finished.stdout
    assert "nothing left to train" not in finished.stderr, "the README's same command again is no cause for a warning"

    other_size = run_cli("quickstart", "--out", str(out), "--size", "112", "--max-iters", "3", "--max-clicks", "3")
    assert other_size.returncode == 1
    assert "this folder's run trained on vit_small_patch14_dinov2-builtin-train-224.zarr" in other_size.stderr
    assert "give each featurizer and size its own --out" in other_size.stderr
    assert not list((out / "cache").glob("*-112.zarr")), "refused before extracting anything"
