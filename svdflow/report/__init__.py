"""The review room: `svdflow report` turns an output folder's index into a static contact sheet.

`sheet` reads the index and writes the page; `cards` gathers what the folder holds of each job,
`assets` writes the input thumbnails and posters, `layout` places sweeps as grids, and `page`
renders the Jinja2 templates in `templates/` (package data) into one self-contained HTML file.
"""

from svdflow.report.cards import Card
from svdflow.report.layout import sweep_layout
from svdflow.report.sheet import write_report

__all__ = ["Card", "sweep_layout", "write_report"]
