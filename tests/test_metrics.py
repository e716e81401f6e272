"""NoC, NoF, mIoU@k and IoU on curves and masks worked out by hand."""

import json

import numpy as np
import pytest

from isegprobe.inference import format_table, iou, number_of_clicks, summarize
from isegprobe.inference.metrics import curve_warnings, format_miou_curves

GT = np.array([[1, 1, 0], [1, 1, 0]], dtype=bool)
PRED = np.array([[1, 1, 1], [1, 0, 0]], dtype=bool)


def test_iou():
    assert iou(GT, PRED) == pytest.approx(3 / 5)


def test_iou_leaves_out_ignored_pixels():
    extra_prediction = np.array([[0, 0, 1], [0, 0, 0]], dtype=bool)
    missed_object = np.array([[0, 0, 0], [0, 1, 0]], dtype=bool)
    assert iou(GT, PRED, ignore=extra_prediction) == pytest.approx(3 / 4)
    assert iou(GT, PRED, ignore=missed_object) == pytest.approx(3 / 4)
    assert iou(GT, PRED, ignore=extra_prediction | missed_object) == 1.0


def test_iou_of_empty_union_is_perfect():
    empty = np.zeros((2, 3), dtype=bool)
    assert iou(empty, empty) == 1.0
    assert iou(empty, PRED) == 0.0


CURVE = [0.5, 0.7, 0.86, 0.88, 0.95]


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [(0.5, 1), (0.85, 3), (0.90, 5), (0.96, 20)],
)
def test_number_of_clicks(threshold, expected):
    assert number_of_clicks(CURVE, threshold, max_clicks=20) == expected


def test_number_of_clicks_counts_only_the_budget():
    assert number_of_clicks(CURVE, 0.90, max_clicks=4) == 4


def test_number_of_clicks_compares_in_float32_like_ritm():
    # RITM's threshold is np.arange's 0.9000000000000001, compared with float32 IoUs in float32: exactly 0.9, and
    # anything that rounds to float32(0.9), reaches it. In float64 neither would.
    assert number_of_clicks([0.9], 0.9000000000000001, max_clicks=20) == 1
    assert number_of_clicks([0.89999997], 0.9, max_clicks=20) == 1
    assert number_of_clicks([0.89999997], np.float64(0.9), max_clicks=20) == 1
    assert number_of_clicks([0.8999999], 0.9, max_clicks=20) == 20


def test_summarize():
    reaches_85_at_3_and_90_at_5 = [0.5, 0.7, 0.86, 0.88, 0.95] + [0.95] * 15
    reaches_85_only_at_the_last_click = [0.4] * 19 + [0.87]
    at_once = [0.97] * 20
    results = summarize([reaches_85_at_3_and_90_at_5, reaches_85_only_at_the_last_click, at_once])

    assert results["num_instances"] == 3
    assert results["max_clicks"] == 20
    assert results["NoC@80"] == pytest.approx((3 + 20 + 1) / 3)
    assert results["NoC@85"] == pytest.approx((3 + 20 + 1) / 3)
    assert results["NoC@90"] == pytest.approx((5 + 20 + 1) / 3)
    # RITM's NoF counts NoC == budget, so reaching 85 % only at click 20 is a failure too.
    assert results["NoF@85"] == 1
    assert results["NoF@90"] == 1
    assert results["IoU@1"] == pytest.approx((0.5 + 0.4 + 0.97) / 3)
    assert len(results["mIoU@k"]) == 20
    assert results["mIoU@k"][2] == pytest.approx((0.86 + 0.4 + 0.97) / 3)
    assert results["mIoU@k"][19] == pytest.approx((0.95 + 0.87 + 0.97) / 3)
    assert "sec_per_click" not in results


def test_summarize_gives_plain_json_types():
    results = summarize([np.array([0.5, 0.9], dtype=np.float32), np.array([0.95])], elapsed_s=np.float64(1.5))
    assert json.loads(json.dumps(results)) == results
    assert all(type(value) in (int, float, list) for value in results.values())
    assert results["sec_per_click"] == pytest.approx(1.5 / 3)


def test_miou_curve_stops_at_the_shortest_curve_and_at_the_budget():
    stopped_early = [0.6, 0.92]
    long = [0.2, 0.4, 0.6, 0.8]
    assert summarize([stopped_early, long])["mIoU@k"] == pytest.approx([0.4, 0.66])
    assert summarize([long], max_clicks=3)["mIoU@k"] == pytest.approx([0.2, 0.4, 0.6])


def test_summarize_rejects_missing_curves():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([[0.5], []])


def test_format_table():
    grabcut = {"NoC@85": 1.5, "NoC@90": 1.625, "NoF@85": 0, "NoF@90": 2, "IoU@1": 0.8765}
    berkeley = {"NoC@85": 2.0}
    lines = format_table({"GrabCut": grabcut, "Berkeley": berkeley}).splitlines()

    assert len(lines) == 4
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == [
        "Dataset",
        "NoC@85",
        "NoC@90",
        "NoF@85",
        "NoF@90",
        "IoU@1",
    ]
    assert [cell.strip() for cell in lines[2].strip("|").split("|")] == [
        "GrabCut",
        "1.50",
        "1.62",
        "0",
        "2",
        "87.65%",
    ]
    assert [cell.strip() for cell in lines[3].strip("|").split("|")] == ["Berkeley", "2.00", "-", "-", "-", "-"]
    assert len({len(line) for line in lines}) == 1


def test_format_table_shows_speed_when_known():
    table = format_table({"GrabCut": {"NoC@85": 1.5, "sec_per_click": 0.0421}})
    assert "SPC, s" in table.splitlines()[0]
    assert "0.042" in table.splitlines()[2]


def test_format_miou_curves_shows_the_clicks_each_run_reached_and_its_last():
    lines = format_miou_curves({"GrabCut": {"mIoU@k": [0.5, 0.6, 0.7, 0.75]}, "DAVIS": {"mIoU@k": [0.4]}})
    assert lines.splitlines() == [
        "mIoU after k clicks (GrabCut): 1: 0.500, 3: 0.700, 4: 0.750",
        "mIoU after k clicks (DAVIS): 1: 0.400",
    ]


def test_curves_of_a_probe_that_segments_nothing_or_ignores_the_clicks_are_warned_of() -> None:
    summaries = {
        "grabcut": {"mIoU@k": [0.0, 0.0, 0.0]},
        "berkeley": {"mIoU@k": [0.219, 0.210, 0.203]},
        "davis": {"mIoU@k": [0.5, 0.7, 0.8]},
        "sbd": {"mIoU@k": [0.6]},
    }
    assert curve_warnings(summaries) == [
        "warning (grabcut): the IoU is 0 at every click on every object: the probe segments nothing of them "
        "(untrained, diverged, or trained on other features?)",
        "warning (berkeley): the mean IoU falls as clicks are added (0.219 after 1, 0.203 after 3): the probe does "
        "not follow the clicks",
    ]
    nearly_flat = {"coco_mval": {"mIoU@k": [0.2000004, 0.2000002, 0.2000001]}}
    assert curve_warnings(nearly_flat) == [
        "warning (coco_mval): the mean IoU falls as clicks are added (0.2000004 after 1, 0.2000001 after 3): the "
        "probe does not follow the clicks"
    ], "as many decimals as tell the two apart"


def test_mean_ious_are_the_research_codes_float32_means_to_the_bit() -> None:
    """The iSegProbe research code (core/inference/utils.py) averages float32 curves with numpy: IoU@1 as
    `np.array([ious[0] for ious in all_ious]).mean(0)`, mIoU@k as `np.array([x[:k] for x in all_ious]).mean(axis=0)`;
    float64 means of the same curves differ in the last bits."""
    rng = np.random.default_rng(0)
    curves = [rng.random(20).astype(np.float32) for _ in range(997)]
    results = summarize(curves, max_clicks=20)
    first = np.array([ious[0] for ious in curves]).mean(0)
    per_click = np.array([ious[:20] for ious in curves]).mean(axis=0)
    assert results["IoU@1"] == float(first)
    assert results["mIoU@k"] == [float(value) for value in per_click]
    in_float64 = np.stack([np.asarray(ious, np.float64) for ious in curves]).mean(axis=0)
    assert [float(value) for value in in_float64] != results["mIoU@k"], "the test can tell the two apart"
