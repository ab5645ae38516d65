"""The review room: `svdflow report` turns an output folder's index into a static contact sheet."""

from svdflow.report.sheet import Card, sweep_layout, write_report

__all__ = ["Card", "sweep_layout", "write_report"]
