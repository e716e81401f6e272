"""`isegprobe datasets list` and `datasets check`, through click's runner."""

import json

import numpy as np
from click.testing import CliRunner
from dataset_trees import berkeley_tree, use_dataset_config, write_image, write_mask

from isegprobe.commands.datasets import datasets


def _run(*args):
    return CliRunner().invoke(datasets, [str(arg) for arg in args])


def test_check_real_grabcut_reports_50_images_and_50_instances(grabcut_root):
    result = _run("check", "grabcut", "--root", grabcut_root)
    assert result.exit_code == 0, result.output
    assert "grabcut/test" in result.output and ": 50 images / 50 instances (50 items)" in result.output
    assert "published: 50 images / 50 instances (matches)" in result.output


def test_check_berkeley_layout_counts_96_images_and_100_instances(tmp_path):
    root = berkeley_tree(tmp_path / "Berkeley", images=96, extra_masks=4)
    result = _run("check", "berkeley", "--root", root)
    assert result.exit_code == 0, result.output
    assert ": 96 images / 100 instances (96 items)" in result.output
    assert "(matches)" in result.output
    per_instance = _run("check", "berkeley", "--root", root, "--split", "test-instances")
    assert ": 96 images / 100 instances (100 items)" in per_instance.output


def test_corrupt_image_stops_with_its_name_or_is_skipped(tmp_path):
    root = berkeley_tree(tmp_path / "Berkeley", images=3, extra_masks=1)
    (root / "images" / "100001.jpg").write_bytes(b"\xff\xd8 truncated")
    stopped = _run("check", "berkeley", "--root", root)
    assert stopped.exit_code == 1
    assert "100001.jpg: cannot read this image" in stopped.output
    assert "images /" not in stopped.output, "the default stops at the first bad file"
    skipped = _run("check", "berkeley", "--root", root, "--on-error", "skip")
    assert skipped.exit_code == 1, "a check with bad files fails even when it reads on"
    assert ": 2 images / 3 instances (3 items)" in skipped.output
    assert "problem: " in skipped.output and "100001.jpg" in skipped.output
    assert "1 bad items skipped" in skipped.output


def test_check_uses_the_configured_root_and_refuses_an_empty_mask_file(tmp_path, monkeypatch):
    root = berkeley_tree(tmp_path / "B", images=2, extra_masks=0)
    write_mask(root / "masks" / "100001.png", np.zeros((8, 10), np.uint8))
    use_dataset_config(monkeypatch, tmp_path, roots={"berkeley": str(root)})
    result = _run("check", "berkeley")
    assert result.exit_code == 1
    assert "100001.png: an empty mask (no object pixel)" in result.output


def test_check_warns_about_items_whose_annotations_cover_no_pixel(tmp_path):
    write_image(tmp_path / "photo.jpg", 24, 32)
    annotations = {
        "images": [{"id": 1, "file_name": "photo.jpg", "height": 24, "width": 32}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[5, 5, 5.2, 5, 5.2, 5.2]]}
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    result = _run("check", "custom", "--root", tmp_path / "annotations.json")
    assert result.exit_code == 0, result.output
    assert "warning: photo: no object pixels" in result.output


def test_list_shows_configured_roots_and_whether_they_are_there(tmp_path, monkeypatch, grabcut_root):
    berkeley = berkeley_tree(tmp_path / "Berkeley", images=1, extra_masks=0)
    config = use_dataset_config(
        monkeypatch,
        tmp_path,
        roots={
            "grabcut": str(grabcut_root),
            "berkeley": str(berkeley),
            "davis": str(tmp_path / "nowhere"),
            "sbd": None,
        },
    )
    result = _run("list")
    assert result.exit_code == 0, result.output
    lines = {
        line.split()[0]: line
        for line in result.output.splitlines()[2:]
        if line.strip() and not line.startswith("downloadable")
    }
    assert f"roots from {config}" in result.output
    assert lines["grabcut"].endswith("found") and "50 images / 50 instances" in lines["grabcut"]
    assert lines["berkeley"].endswith("found") and "96 images / 100 instances" in lines["berkeley"]
    assert lines["davis"].endswith("missing")
    assert lines["sbd"].endswith("not set") and "2857 images / 6671 instances" in lines["sbd"]
    assert lines["builtin"].endswith("built in")
    assert "downloadable: berkeley, coco_mval, cocolvis, davis, grabcut, sbd" in result.output


def test_check_unknown_dataset_and_missing_root_are_clear(tmp_path, monkeypatch):
    use_dataset_config(monkeypatch, tmp_path, roots={"sbd": None})
    assert "unknown dataset 'nope'" in _run("check", "nope", "--root", tmp_path).output
    assert "unknown dataset 'nope'" in _run("check", "nope").output, "said before its root is looked for"
    missing = _run("check", "sbd")
    assert missing.exit_code == 1 and "no folder given for sbd" in missing.output
