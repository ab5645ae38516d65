"""Longer, looping and smoother clips: `segments` (chained clips), `loop` (pingpong, crossfade, with
`loop_frames`) and `interpolate` (ffmpeg's minterpolate), applied in that order before encoding.

The frame arithmetic and the post-processing are checked on synthetic frames whose motion is known
(a bar moving at a steady speed); the rest end to end on builtin:tiny, in real files.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from conftest import SVDFLOW, recorded, write_image, write_manifest
from PIL import Image

from svdflow.api import RunOptions, load_run_spec, plan_run, rerender, run_manifest
from svdflow.outputs.clip import clip_shape
from svdflow.outputs.entry import MasterRecord
from svdflow.outputs.masters import read_master
from svdflow.outputs.post import crossfade, interpolate, pingpong, post_process
from svdflow.outputs.store import OutputStore
from svdflow.pipeline import render
from svdflow.pipeline.overlap import OverlappedRenderer
from svdflow.pipeline.segments import segment_seed
from svdflow.pipeline.session import PipelineSession, render_job
from svdflow.run.progress import JsonReporter

W, H = 96, 48
BAR = (250, 250, 90)


def moving_bar(count: int, speed: int = 4, width: int = 8) -> np.ndarray:
    """`count` frames of a bar moving right by `speed` pixels a frame over a horizontal gradient."""
    base = np.broadcast_to((40 + np.arange(W) * 1.5).astype(np.uint8)[None, :, None], (H, W, 3))
    frames = np.repeat(base[None], count, axis=0).copy()
    for i in range(count):
        frames[i, 8:40, 4 + i * speed: 4 + i * speed + width] = BAR
    return frames


def steps_and_wrap(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean absolute difference between consecutive frames, and from the last frame back to the first."""
    f = frames.astype(np.int16)
    return np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3)), float(np.abs(f[0] - f[-1]).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# ---------------------------------------------------------------------------------------------
# The arithmetic, through the manifest: frames and seconds for each option and their combinations

CASES = {  # item fields -> (rendered, after loop, written, fps)
    "plain": ("num_frames: 25", (25, 25, 25, 7.0)),
    "chained": ("num_frames: 25, segments: 3", (73, 73, 73, 7.0)),
    "pingpong": ("num_frames: 25, loop: pingpong", (25, 48, 48, 7.0)),
    "crossfade": ("num_frames: 25, loop: crossfade", (25, 19, 19, 7.0)),  # a quarter: 6 frames
    "crossfade-12": ("num_frames: 25, loop: crossfade, loop_frames: 12", (25, 13, 13, 7.0)),
    "smooth": ("num_frames: 25, interpolate: 2", (25, 25, 49, 14.0)),
    "smooth-24": ("num_frames: 25, interpolate: 2, playback_fps: 24", (25, 25, 49, 24.0)),
    "pingpong-x3": ("num_frames: 25, loop: pingpong, interpolate: 3", (25, 48, 144, 21.0)),
    "all": ("num_frames: 25, segments: 2, loop: crossfade, interpolate: 2", (49, 37, 74, 14.0)),
    "all-6fps": ("num_frames: 14, fps: 6, segments: 4, loop: pingpong, interpolate: 4", (53, 104, 416, 24.0)),
    "one-frame": ("num_frames: 1, loop: pingpong, interpolate: 4", (1, 1, 4, 28.0)),
    "two-frames": ("num_frames: 2, loop: crossfade", (2, 1, 1, 7.0)),
}


@pytest.fixture
def cases_manifest(tmp_path):
    write_image(tmp_path / "a.png")
    items = "".join(f"  - {{id: {name}, image: a.png, {fields}}}\n" for name, (fields, _) in CASES.items())
    return write_manifest(tmp_path, "svdflow: 1\nmodel: {source: builtin:tiny}\noutput: {dir: out}\nitems:\n" + items)


def test_frame_counts_and_durations_for_each_option_and_their_combinations(cases_manifest):
    planned = {p.job.id: p for p in plan_run(load_run_spec(cases_manifest))}
    for name, (_, (rendered, looped, written, fps)) in CASES.items():
        job = planned[name].job
        assert astuple(clip_shape(job.params)) == (rendered, looped, written, fps), name
        assert job.params.playback_fps == fps, name
        assert planned[name].to_json()["clip"] == {"rendered_frames": rendered, "frames": written, "fps": fps,
                                                   "duration_s": round(written / fps, 3)}, name
    assert planned["crossfade"].job.params.loop_frames == 6  # a quarter of 25, resolved and recorded
    assert planned["pingpong"].job.params.loop_frames is None  # only a crossfade uses it


def test_the_plan_table_shows_each_jobs_frames_and_duration(cases_manifest, capsys):
    from conftest import run_cli

    code, out, _ = run_cli(capsys, "plan", str(cases_manifest))
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:2 + len(CASES)]}
    # frames (segments x num_frames), clip (frames written), duration
    assert rows["plain"][4:7] == ["25", "25", "3.57s"]
    assert rows["chained"][4:7] == ["3x25", "73", "10.43s"]
    assert rows["all"][4:7] == ["2x25", "74", "5.29s"]
    assert rows["smooth-24"][4:7] == ["25", "49", "2.04s"]


def test_post_processing_makes_the_frames_the_arithmetic_says(cases_manifest):
    """The same counts from the frame operations themselves (real ffmpeg), for every case."""
    for planned in plan_run(load_run_spec(cases_manifest)):
        params = planned.job.params
        clip = clip_shape(params)
        frames = moving_bar(clip.rendered, speed=1)
        assert len(post_process(frames, params)) == clip.frames, planned.job.id


def test_loop_frames_without_a_crossfade_and_clips_too_big_for_memory_warn(tmp_path):
    write_image(tmp_path / "a.png")
    spec = load_run_spec(write_manifest(tmp_path, """
        svdflow: 1
        model: {source: builtin:tiny}
        defaults: {num_frames: 25, loop_frames: 4}
        items:
          - {id: bounce, image: a.png, loop: pingpong}
          - {id: swept, image: a.png, sweep: {loop: [none, crossfade]}}
          - {id: huge, image: a.png, segments: 20, interpolate: 8, loop: crossfade}
        """))
    # huge: 20 x 25 - 19 = 481 frames, 477 once crossfaded over 4, 8 for each (looping): 3816
    assert [(w.line, w.message) for w in spec.warnings] == [
        (3, "item 'bounce': loop_frames has no effect with loop: pingpong (only a crossfade blends frames); "
            "remove it or set loop: crossfade"),
        (7, "item 'huge': its clip is 3816 frames of 1024x576, 6.3 GiB held in memory while it is encoded; lower "
            "interpolate, segments or num_frames if that is more than this machine has")]
    assert [job.params.loop_frames for job in spec.jobs] == [None, None, 4, 4]


# ---------------------------------------------------------------------------------------------
# The frame operations


def test_pingpong_goes_back_without_repeating_either_end():
    frames = moving_bar(5)
    out = pingpong(frames)
    assert [int(np.argmax(f[20, :, 2] == BAR[2])) for f in out] == [4, 8, 12, 16, 20, 16, 12, 8]
    assert np.array_equal(out[:5], frames) and np.array_equal(out[5:], frames[3:0:-1])
    assert np.array_equal(pingpong(frames[:2]), frames[:2])


def test_crossfade_blends_the_end_into_the_start():
    frames = moving_bar(10)
    out = crossfade(frames, 3)
    assert len(out) == 7 and np.array_equal(out[3:], frames[3:7])
    for i in range(3):  # start frame i weighed i + 1, end frame 7 + i weighed 3 - i, over 4, rounded half up
        expected = (frames[7 + i].astype(np.uint32) * (3 - i) + frames[i].astype(np.uint32) * (i + 1) + 2) // 4
        assert np.array_equal(out[i], expected.astype(np.uint8)), i
    with pytest.raises(ValueError, match=r"^loop_frames 6 does not fit a clip of 10 frames \(1 to 5\)$"):
        crossfade(frames, 6)


def test_interpolation_keeps_the_rendered_frames_and_moves_between_them():
    frames = moving_bar(6)
    out = interpolate(frames, 2, cyclic=False)
    assert len(out) == 11 and np.array_equal(out[::2], frames)

    def bar_columns(frame):
        return np.flatnonzero(np.abs(frame[20].astype(int) - BAR).max(axis=1) < 40)

    # Motion-compensated, not blended: once the motion is known (from the third pair on) the frame
    # halfway holds a whole bar halfway along (a blend would show two half-bright ones, 4 columns whole).
    for pair in (3, 4):
        assert list(bar_columns(out[2 * pair + 1])) == list(range(4 + 4 * pair + 2, 4 + 4 * pair + 10)), pair
    cyclic = interpolate(frames, 3, cyclic=True)
    assert len(cyclic) == 18 and np.array_equal(cyclic[::3], frames)
    assert interpolate(frames, 2, cyclic=False).tobytes() == out.tobytes()  # deterministic
    assert np.array_equal(interpolate(frames[:1], 4, cyclic=True), np.repeat(frames[:1], 4, axis=0))


@pytest.mark.parametrize(("loop", "factor"), [("pingpong", 1), ("crossfade", 1), ("pingpong", 2), ("crossfade", 3)])
def test_looping_clips_step_back_to_their_start_like_any_other_frame(loop, factor):
    frames = moving_bar(16)
    params = type("P", (), {"loop": loop, "loop_frames": 4, "interpolate": factor})()
    steps, wrap = steps_and_wrap(post_process(frames, params))
    assert wrap <= steps.max(), (wrap, steps.max())
    _, jump = steps_and_wrap(interpolate(frames, factor, cyclic=False))
    assert jump > 1.5 * steps.max()  # without a loop the clip jumps back


# ---------------------------------------------------------------------------------------------
# End to end on builtin:tiny

CAMPAIGN = """
svdflow: 1
name: clips
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: out, formats: [mp4, gif, frames]}
defaults: {num_frames: 6, num_inference_steps: 2, width: 64, height: 64, fps: 7}
items:
  - {id: chain, image: a.png, segments: 3}
  - {id: fade, image: a.png, seed: 5, segments: 2, loop: crossfade, interpolate: 2}
  - {id: bounce, image: b.png, loop: pingpong}
  - {id: still, image: b.png}
"""


class RenderSpy:
    """Wraps render.render_frames: each call's seed, conditioning image and frames, by job id."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, pipe, image, params, **kwargs):
        frames = self.real(pipe, image, params, **kwargs)
        self.calls.append((params.seed, np.asarray(image.convert("RGB")).copy(), frames))
        return frames


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The campaign rendered once (the pipeline's calls recorded), kept aside as it was."""
    base = tmp_path_factory.mktemp("clips")
    work = base / "work"
    write_image(work / "a.png", 64, 64)
    write_image(work / "b.png", 64, 64, seed=3)
    manifest = write_manifest(work, CAMPAIGN)
    events = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        spy = RenderSpy(render.render_frames)
        patch.setattr(render, "render_frames", spy)
        result = run_manifest(manifest, RunOptions(), JsonReporter(events))
    assert result.statuses == {"chain": "done", "fade": "done", "bounce": "done", "still": "done"}
    shutil.copytree(work, base / "kept")
    events = [json.loads(line) for line in events.getvalue().splitlines()]
    return work, base / "kept", spy.calls, events


@pytest.fixture
def campaign(rendered) -> Path:
    """The rendered campaign afresh, at the path it was rendered in (so files compare byte for byte)."""
    work, kept, _, _ = rendered
    shutil.rmtree(work)
    shutil.copytree(kept, work)
    return work


def entries(folder: Path) -> dict[str, dict]:
    return recorded(folder / "out")


def decoded(path: Path) -> tuple[np.ndarray, dict]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])
    return frames, meta


def master_frames(folder: Path, entry: dict) -> np.ndarray:
    return read_master(OutputStore(str(folder / "out")), MasterRecord(**entry["master"]), 64, 64)


def test_written_files_hold_the_frames_and_last_the_seconds_the_plan_says(rendered):
    work, _, _, _ = rendered
    spec = load_run_spec(work / "m.yaml")
    # chain: 3 x 6 - 2; fade: 2 x 6 - 1 = 11, less 2 crossfaded, each of the 9 twice; bounce: 6 + 4
    expected = {"chain": (16, 7.0), "fade": (18, 14.0), "bounce": (10, 7.0), "still": (6, 7.0)}
    for job in spec.jobs:
        clip = clip_shape(job.params)
        assert (clip.frames, clip.fps) == expected[job.id]
        frames, meta = decoded(work / "out" / f"{job.id}.mp4")
        assert (len(frames), meta["fps"]) == (clip.frames, clip.fps), job.id
        assert abs(meta["duration"] - clip.duration_s) <= 0.01, job.id
        with Image.open(work / "out" / f"{job.id}.gif") as gif:
            # GIF keeps delays in hundredths of a second
            assert gif.n_frames == clip.frames and abs(gif.info["duration"] - 1000 / clip.fps) <= 5, job.id
        assert len(list((work / "out" / f"{job.id}_frames").glob("*.png"))) == clip.frames, job.id


def test_each_segment_starts_from_the_previous_ones_last_frame(rendered):
    """On the raw frames: segment k is conditioned on segment k-1's last decoded frame, exactly, and the
    clip keeps that frame once, where the one ends and the other begins. In the written files: the
    frame there is that frame (PNG: exactly; mp4: within the encoding)."""
    work, _, calls, _ = rendered
    entry = entries(work)["chain"]
    chain = [call for call in calls if call[0] in {s["seed"] for s in entry["segments"]}]
    assert len(chain) == 3
    (_, input_image, first), (_, image_1, second), (_, image_2, third) = chain
    assert np.array_equal(image_1, first[-1]) and np.array_equal(image_2, second[-1])
    assert not np.array_equal(input_image, first[-1])

    joined = np.concatenate([first, second[1:], third[1:]])
    assert np.array_equal(master_frames(work, entry), joined)  # the master keeps the rendered frames
    pngs = np.stack([np.asarray(Image.open(p)) for p in sorted((work / "out" / "chain_frames").glob("*.png"))])
    mp4, _ = decoded(work / "out" / "chain.mp4")
    assert np.array_equal(pngs, joined)
    for boundary, ended, started in ((5, first, second), (10, second, third)):
        assert np.array_equal(pngs[boundary], ended[-1])
        # builtin:tiny's frames are noise, H.264's worst case: at crf 18 every frame of this clip decodes to
        # 27.5-29.5 dB (measured), the boundary frame too, and far from the next segment's own first frame
        # (dropped: ~19 dB), which real SVD makes close to the frame it was conditioned on.
        assert psnr(mp4[boundary], ended[-1]) >= 26, boundary
        assert np.abs(mp4[boundary].astype(int) - ended[-1]).mean() <= 8, boundary
        assert psnr(mp4[boundary], ended[-1]) >= psnr(mp4[boundary], started[0]) + 6, boundary


def test_segments_seeds_and_timings_are_recorded_and_progress_names_each_segment(rendered):
    work, _, calls, events = rendered
    jobs = entries(work)
    chain, fade = jobs["chain"], jobs["fade"]
    seed = chain["seed"]
    assert [(s["index"], s["seed"]) for s in chain["segments"]] == [
        (0, seed), (1, segment_seed(seed, 1)), (2, segment_seed(seed, 2))]
    assert [s["seed"] for s in fade["segments"]] == [5, segment_seed(5, 1)]
    assert all(s["render_s"] > 0 for s in chain["segments"])
    assert sum(s["render_s"] for s in chain["segments"]) <= chain["timings"]["render_s"]
    assert "segments" not in jobs["bounce"]  # a single clip: left out (svdflow.compat)
    assert [call[0] for call in calls] == [seed, segment_seed(seed, 1), segment_seed(seed, 2), 5,
                                           segment_seed(5, 1), jobs["bounce"]["seed"], jobs["still"]["seed"]]
    stages = [(e["id"], e["stage"]) for e in events if e["event"] == "job_stage" and e["id"] == "chain"]
    assert [stage for _, stage in stages if stage.startswith("segment")] == [
        "segment 1 of 3", "segment 2 of 3", "segment 3 of 3"]
    assert not [e for e in events if e["event"] == "job_stage" and e["stage"].startswith("segment")
                and e["id"] == "bounce"]
    # segments decide the pixels (render key); loop and interpolate the files (output key)
    assert chain["key_material"]["render"]["params"]["segments"] == 3
    assert fade["key_material"]["output"]["params"] == {"playback_fps": 14.0, "loop": "crossfade", "loop_frames": 2,
                                                        "interpolate": 2}
    assert "segments" not in jobs["bounce"]["key_material"]["render"]["params"]


def test_pingpong_and_crossfade_outputs_loop(rendered):
    """Measured on the decoded mp4s: the step from the last frame back to the first is no larger than
    the clip's own steps. (builtin:tiny's frames are noise, so an unlooped clip does not visibly jump
    back; test_looping_clips_step_back_... shows that on frames that move.)"""
    work, _, _, _ = rendered
    for job in ("bounce", "fade"):
        steps, wrap = steps_and_wrap(decoded(work / "out" / f"{job}.mp4")[0])
        assert wrap <= steps.max(), (job, wrap, steps.max())


def test_changing_loop_or_interpolate_re_encodes_from_the_master_without_the_pipeline(campaign, monkeypatch):
    manifest = campaign / "m.yaml"
    before = entries(campaign)
    manifest.write_text(manifest.read_text().replace("loop: crossfade, interpolate: 2", "loop: pingpong")
                        .replace("b.png, loop: pingpong", "b.png, loop: pingpong, interpolate: 3"))
    assert [(p.job.id, p.status, p.reason) for p in plan_run(load_run_spec(manifest))] == [
        ("chain", "up to date", ""),
        ("fade", "re-encode", "playback_fps 14.0 -> 7.0, loop crossfade -> pingpong, loop_frames 2 -> default, "
                              "interpolate 2 -> default"),
        ("bounce", "re-encode", "playback_fps 7.0 -> 21.0, interpolate default -> 3"),
        ("still", "up to date", "")]

    monkeypatch.setattr(PipelineSession, "load", never_built)
    result = run_manifest(manifest)
    assert result.statuses == {"chain": "up to date", "fade": "re-encoded", "bounce": "re-encoded",
                               "still": "up to date"}
    reencoded = entries(campaign)
    for job in ("fade", "bounce"):
        entry = reencoded[job]
        assert entry["encoded_from"] == "master" and entry["frames_sha256"] == before[job]["frames_sha256"]
        assert entry.get("segments") == before[job].get("segments")  # the render's (a single clip: none)
        frames, meta = decoded(campaign / "out" / f"{job}.mp4")
        # fade: 11 rendered, there and back (20); bounce: there and back (10), 3 frames for each (30)
        assert (len(frames), meta["fps"]) == {"fade": (20, 7.0), "bounce": (30, 21.0)}[job]
    assert len(reencoded["fade"]["segments"]) == 2
    monkeypatch.undo()

    # A render with the new settings writes the very files the re-encode wrote.
    assert run_manifest(manifest, RunOptions(only=("fade", "bounce"), force=True)).statuses == {
        "fade": "done", "bounce": "done"}
    forced = entries(campaign)
    for job in ("fade", "bounce"):
        assert forced[job]["encoded_from"] == "render"
        assert forced[job]["outputs"] == reencoded[job]["outputs"], job


def never_built(self):
    raise AssertionError("the pipeline was built")


def test_a_chained_looped_job_renders_again_from_its_entry(campaign, tmp_path):
    work = campaign
    result = rerender(str(work / "out" / "index.jsonl"), "fade", out_dir=str(tmp_path))
    assert result.matches
    for output in entries(work)["fade"]["outputs"]:
        if output["format"] != "frames":
            assert hashlib.sha256((tmp_path / output["file"]).read_bytes()).hexdigest() == output["sha256"]


@pytest.mark.slow
def test_segment_seeds_do_not_depend_on_order_batch_or_process(campaign, tmp_path):
    """Another process (the CLI), the job last among others: the same seeds, the same frames."""
    work = campaign
    shutil.copy(work / "a.png", tmp_path / "a.png")
    write_image(tmp_path / "c.png", 64, 64, seed=9)
    reordered = CAMPAIGN.replace("name: clips", "name: other").replace(
        "  - {id: chain, image: a.png, segments: 3}\n", "").replace(
        "  - {id: bounce, image: b.png, loop: pingpong}\n  - {id: still, image: b.png}\n",
        "  - {id: other, image: c.png, segments: 2}\n  - {id: chain, image: a.png, segments: 3}\n")
    manifest = write_manifest(tmp_path, reordered)
    proc = subprocess.run([*SVDFLOW, "run", str(manifest)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    mine, theirs = entries(work)["chain"], entries(tmp_path)["chain"]
    assert [s["seed"] for s in theirs["segments"]] == [s["seed"] for s in mine["segments"]]
    assert theirs["frames_sha256"] == mine["frames_sha256"]
    # the seeds are a function of (seed, index) alone, in any process
    script = "from svdflow.pipeline.segments import segment_seed; print([segment_seed(42, k) for k in range(4)])"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([segment_seed(42, k) for k in range(4)])
    assert segment_seed(42, 0) == 42 and segment_seed(42, 1) == 2032267759798404295


def test_the_overlapped_renderer_renders_a_chained_job_plainly(tmp_path):
    """overlap_decode defers each job's decode into the next job's steps; a chained job cannot wait (each
    segment needs the last one's frames), so the decode waiting is delivered first and the job renders
    as render_job does."""
    write_image(tmp_path / "a.png", 64, 64)
    manifest = write_manifest(tmp_path, CAMPAIGN.replace("profile: cpu", "profile: cpu, overlap_decode: true")
                              .replace("id: bounce, image: b.png", "id: bounce, image: a.png"))
    spec = load_run_spec(manifest)
    session = PipelineSession(spec, spec.jobs)
    image = Image.open(tmp_path / "a.png").convert("RGB")
    events: list = []

    class Sink:
        def __init__(self, job_id):
            self.job_id, self.result = job_id, None

        def done(self, result):
            self.result = result
            events.append(("done", self.job_id))

        def failed(self, error):
            raise error

    renderer = OverlappedRenderer(session)
    sinks = {}
    for job in (spec.job("bounce"), spec.job("chain")):
        sinks[job.id] = Sink(job.id)
        renderer.submit(job, image, sinks[job.id], lambda done, total, job=job: events.append((job.id, done)),
                        lambda number, count: events.append(("segment", number, count)))
        events.append(("submitted", job.id))
    renderer.finish()

    chained = [("segment", k, 3) if i == 0 else ("chain", i) for k in (1, 2, 3) for i in range(3)]
    assert events == [("bounce", 1), ("bounce", 2), ("submitted", "bounce"), ("done", "bounce"),
                      *chained, ("done", "chain"), ("submitted", "chain")]
    plain = render_job(session, spec.job("chain"), image)
    assert np.array_equal(sinks["chain"].result.frames, plain.frames)
    assert [s.seed for s in sinks["chain"].result.segments] == [s.seed for s in plain.segments]


def test_a_job_that_uses_none_of_them_is_recorded_as_before_they_existed(campaign, monkeypatch):
    """Its entry and keys name none of the new parameters (svdflow.compat), so campaigns rendered before
    they existed (svdflow 0.1's: tests/test_index.py's fixture; issue 15's format 2) keep their keys:
    nothing renders or re-encodes."""
    from svdflow.manifest.schema import RELEASE_0_1_PARAMETERS

    still = entries(campaign)["still"]
    assert set(still["params"]) == set(RELEASE_0_1_PARAMETERS) and "segments" not in still
    assert set(still["key_material"]["render"]["params"]) | set(still["key_material"]["output"]["params"]) == set(
        RELEASE_0_1_PARAMETERS)
    monkeypatch.setattr(PipelineSession, "load", never_built)
    assert run_manifest(campaign / "m.yaml", RunOptions(only=("still",))).statuses == {"still": "up to date"}
