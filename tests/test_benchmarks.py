"""Every benchmark script runs end to end with its smallest arguments, prints its table and writes valid JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--featurizer", "vit_tiny_patch16_224", "--size", "64", "--repeats", "1"]
SMALLEST = {
    "train_throughput": [
        "--items", "4", "--size-a", "64", "--steps", "1", "--steps-a", "1", "--repeats-a", "1", "--batch-size", "1",
        "--profile",
    ],
    "extract_overhead": ["--extract-workers", "0", "--batch-size", "4"],
    "extract_pipeline": ["--images", "3", "--batch-size", "2", "--extract-workers", "1"],
    "reader": ["--items", "4", "--batch-size", "2", "--batches", "1", "--steps", "1", "--workers", "0"],
    "store_size": ["--items", "2"],
    "eval_per_click": ["--objects", "1", "--clicks", "2", "--batch-size", "1", "--train-steps", "2"],
    "eval_loop_cpu": [
        "--baseline-tree", str(BENCHMARKS.parent), "--processes", "1", "--objects", "1", "--clicks", "2",
        "--batch-size", "1", "--train-steps", "2",
    ],
    "mask_decoding": ["--scenes", "2"],
}  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store folder for all scripts, so each tiny store is extracted once."""
    return tmp_path_factory.mktemp("bench-cache")


@pytest.mark.parametrize("name", list(SMALLEST))
def test_benchmark_prints_table_and_writes_json(name: str, cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), *TINY, *SMALLEST[name]]
    command += ["--cache-dir", str(cache_dir), "--json", str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"## {name}" in finished.stdout
    assert "|---" in finished.stdout
    assert "targets" in finished.stdout
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == name
    assert payload["checks"] and all(isinstance(check["passed"], bool) for check in payload["checks"])
    assert payload["results"]


def test_cli_start_times_a_command_in_both_trees(tmp_path: Path) -> None:
    out = tmp_path / "cli_start.json"
    command = [sys.executable, str(BENCHMARKS / "cli_start.py"), "--repeats", "1", "--commands", "report"]
    command += ["--baseline-tree", str(BENCHMARKS.parent), "--json", str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "| report --help |" in finished.stdout and "baseline / this tree" in finished.stdout
    payload = json.loads(out.read_text())
    assert set(payload["results"]["report --help"]) == {"this tree", "baseline"}
    assert [check["name"] for check in payload["checks"]] == ["report --help, seconds"]


def test_cuda_agreement_needs_a_gpu_and_says_so() -> None:
    """It compares CUDA with the CPU, so it runs only on a GPU machine; here it must stop with a clear message."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the comparison itself runs for minutes (see benchmarks/README.md)")
    script = str(BENCHMARKS / "cuda_agreement.py")
    for device, message in (("cuda", "--device cuda: no CUDA device here"), ("cpu", "run it with --device cuda")):
        finished = subprocess.run([sys.executable, script, "--device", device], capture_output=True, text=True)
        assert finished.returncode == 1 and message in finished.stderr, finished.stderr[-2000:]


def test_research_maskclip_needs_the_research_code_and_says_so(tmp_path: Path) -> None:
    """It compares with the iSegProbe research code's own MaskCLIP, which is no part of isegprobe: without a checkout
    of it, it must stop with a clear message."""
    script = str(BENCHMARKS / "research_maskclip.py")
    finished = subprocess.run([sys.executable, script, "--research-src", str(tmp_path)], capture_output=True, text=True)
    assert finished.returncode == 1 and "not an iSegProbe checkout" in finished.stderr, finished.stderr[-2000:]
