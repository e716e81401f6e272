"""Evaluation as the interactive-segmentation papers run it: RITM's simulated clicks and its NoC / NoF / mIoU@k."""

from isegprobe.inference.clicker import Click, Clicker
from isegprobe.inference.metrics import format_table, iou, number_of_clicks, summarize

__all__ = ["Click", "Clicker", "format_table", "iou", "number_of_clicks", "summarize"]
