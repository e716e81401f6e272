"""The house rules a newcomer relies on: small modules, each with one job, that one can read in a sitting."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A module past this many lines does more than one job: split it where its jobs part (as cache/extract.py became
# extract.py, extract_loop.py and shard_views.py).
MAX_MODULE_LINES = 400


def test_no_module_of_the_package_or_the_cache_tools_is_over_400_lines() -> None:
    modules = sorted([*(ROOT / "isegprobe").rglob("*.py"), *(ROOT / "cache_tools").rglob("*.py")])
    assert len(modules) > 100, "the package's modules were not found"
    long = {
        str(module.relative_to(ROOT)): lines
        for module in modules
        if (lines := len(module.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
