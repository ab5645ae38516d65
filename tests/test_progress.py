"""Progress of a campaign of hours: throughput and time left from the jobs' costs, in the live display
and in --json events; a terminal that does not scroll a line per job."""

from __future__ import annotations

import io
import json
import re

import pytest
from conftest import write_image, write_manifest
from rich.console import Console

from svdflow.api import RunOptions, run_manifest
from svdflow.run.pace import Pace, PaceMeter, duration_text, pace_text
from svdflow.run.progress import Fanout, JsonReporter, PlainReporter, RichReporter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_left_is_weighted_by_the_jobs_costs_not_their_count():
    clock = Clock()
    # Two small jobs, one 10x bigger, one up to date: counting jobs would say half the run is done
    # after the two small ones; by cost it is 2 of 14.
    meter = PaceMeter({"s1": 1.0, "s2": 1.0, "big": 10.0, "old": 2.0}, clock=clock)
    assert meter.pace() == Pace(0, 4, 0, 0.0, None, None)
    clock.now += 30
    assert meter.finished("old", "up to date") == Pace(1, 4, 0, 30.0, None, None)  # no render yet: no pace
    clock.now += 30
    pace = meter.finished("s1", "done")
    # 1 cost unit in 60 s (the up-to-date job's time counts: it is the run's); 11 units wait.
    assert pace == Pace(2, 4, 1, 60.0, 60.0, 660.0)
    clock.now += 20
    assert meter.finished("s2", "failed") == Pace(3, 4, 1, 80.0, 45.0, 800.0)  # a failure paid no render cost
    assert meter.finished("s2", "failed").finished == 3  # said twice (a Ray job answered again): once
    clock.now += 520
    assert meter.finished("big", "done") == Pace(4, 4, 2, 600.0, 12.0, 0.0)
    assert meter.pace().to_json() == {"finished": 4, "jobs": 4, "videos": 2, "elapsed_s": 600.0,
                                      "videos_per_hour": 12.0, "eta_s": 0.0}


def test_a_re_encoded_job_is_a_video_but_not_rendered_work():
    clock = Clock()
    meter = PaceMeter({"a": 4.0, "b": 4.0, "c": 4.0}, clock=clock)
    clock.now += 10
    assert meter.finished("a", "re-encoded") == Pace(1, 3, 1, 10.0, 360.0, None)
    clock.now += 10
    assert meter.finished("b", "done") == Pace(2, 3, 2, 20.0, 360.0, 20.0)


def test_durations_and_pace_in_words():
    assert [duration_text(s) for s in (None, 0, 59.6, 3725, 86400 * 2 + 3 * 3600 + 4 * 60 + 5)] == [
        "?", "0:00:00", "0:01:00", "1:02:05", "2d 03:04"]
    assert pace_text(Pace(3, 9, 3, 10.0, 1080.0, 125.0)) == "1,080.0 videos/h, 0:02:05 left"
    assert pace_text(Pace(0, 9, 0, 1.0, None, None)) == "? videos/h, ? left"


CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen_lines(raw: str) -> list[str]:
    """What a terminal shows after `raw`, scrollback included: a tiny emulator of the control codes
    rich's live display uses (cursor up, erase line, carriage return, newline)."""
    lines, row, col = [""], 0, 0
    pos = 0
    while pos < len(raw):
        match = CSI.match(raw, pos)
        if match:
            count = int(match[1]) if match[1].isdigit() else 1
            if match[2] == "A":
                row = max(0, row - count)
            elif match[2] == "K":
                lines[row] = ""
            elif match[2] == "G":
                col = count - 1
            pos = match.end()
            continue
        char = raw[pos]
        pos += 1
        if char == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif char == "\r":
            col = 0
        elif char >= " ":
            line = lines[row].ljust(col)
            lines[row] = line[:col] + char + line[col + 1:]
            col += 1
    return lines


CAMPAIGN = """
svdflow: 1
name: many
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: out, formats: [gif], masters: false}
defaults: {num_frames: 2, num_inference_steps: 1, width: 64, height: 64}
items:
"""


@pytest.mark.slow
def test_a_terminal_shows_the_last_jobs_and_the_pace_in_a_region_that_does_not_grow(tmp_path):
    """A real run of 10 jobs on a terminal: the display's height is the same as for a few jobs, and
    the --json events of the same run carry the pace."""
    jobs = 10
    write_image(tmp_path / "in.png")
    manifest = write_manifest(tmp_path, CAMPAIGN + "".join(f"  - {{id: job{i:02d}, image: in.png, seed: {i}}}\n"
                                                           for i in range(jobs)))
    raw, events = io.StringIO(), io.StringIO()
    console = Console(file=raw, force_terminal=True, width=150, color_system=None)
    rich = RichReporter(console, recent_lines=3)
    try:
        result = run_manifest(manifest, RunOptions(), Fanout(JsonReporter(events), rich))
    finally:
        rich.close()
    assert result.exit_code == 0

    shown = [line.rstrip() for line in screen_lines(raw.getvalue()) if line.strip()]
    assert shown[0] == f"svdflow: many: {jobs} jobs -> {tmp_path / 'out'}"
    # The run's first line, the last 3 finished jobs, the jobs bar: 5 lines for 10 jobs (one a job before).
    assert len(shown) == 5, shown
    assert [line.split(":")[0] for line in shown[1:4]] == ["job07", "job08", "job09"]
    assert re.fullmatch(rf"many +━+ {jobs}/{jobs} \d:\d\d:\d\d [\d,.]+ videos/h, 0:00:00 left", shown[4]), shown[4]

    finished = [e for line in events.getvalue().splitlines() if (e := json.loads(line))["event"] == "job_finished"]
    assert [e["finished"] for e in finished] == list(range(1, jobs + 1))
    assert all(e["jobs"] == jobs and e["videos"] == e["finished"] for e in finished)
    assert all(e["videos_per_hour"] > 0 and e["eta_s"] >= 0 for e in finished) and finished[-1]["eta_s"] == 0


def test_plain_lines_carry_the_pace_for_logs():
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    reporter.run_started("c", 2, "out")
    reporter.job_finished("a", "done", {"seconds": 1.0, "files": ["a.mp4"], **Pace(1, 2, 1, 10.0, 360.0, 10.0).to_json()})
    reporter.job_finished("b", "up to date", Pace(2, 2, 1, 10.0, 360.0, 0.0).to_json())
    assert stream.getvalue().splitlines() == [
        "svdflow: c: 2 jobs -> out", "[1/2] a: done in 1.0s -> a.mp4 (360.0 videos/h, 0:00:10 left)", "[2/2] b: up to date"]


def test_up_to_date_jobs_told_at_once_are_the_events_and_lines_told_one_by_one(monkeypatch):
    """A rerun of a finished campaign hands the reporters its up-to-date jobs a batch at a time (one
    write each, not two flushed events per job): the same events and lines as one job at a time."""
    from svdflow.run import progress
    from svdflow.run.progress import Reporter, UpToDateEvent

    monkeypatch.setattr(progress.time, "time", lambda: 1234.5678)
    info = {"finished": 1, "jobs": 3, "videos": 0, "elapsed_s": 0.1, "videos_per_hour": None, "eta_s": 0.0}
    jobs = [UpToDateEvent(f"j{i}", i, 3, {**info, "finished": i}) for i in (1, 2, 3)]
    for make in (lambda s: JsonReporter(s), lambda s: JsonReporter(s, rank=1), lambda s: PlainReporter(s, "w")):
        batched, one_by_one = io.StringIO(), io.StringIO()
        reporter = make(batched)
        reporter.run_started("c", 3, "out")
        reporter.jobs_up_to_date(jobs)
        reference = make(one_by_one)
        reference.run_started("c", 3, "out")
        Reporter.jobs_up_to_date(reference, jobs)  # the default: job_started and job_finished each
        assert batched.getvalue() == one_by_one.getvalue()
        assert batched.getvalue().count("j2") == (2 if isinstance(reporter, JsonReporter) else 1)
    lines = io.StringIO()
    JsonReporter(lines).jobs_up_to_date(jobs[:1])
    assert [json.loads(line) for line in lines.getvalue().splitlines()] == [
        {"event": "job_started", "time": 1234.568, "id": "j1", "number": 1, "jobs": 3},
        {"event": "job_finished", "time": 1234.568, "id": "j1", "status": "up to date", **info}]
