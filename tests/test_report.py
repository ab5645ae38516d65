"""`svdflow report`: the contact sheet of an output folder, checked as HTML and in a real Chromium.

The output folders here are built without the renderer: real H.264 mp4s from ffmpeg, real
animated webp/gif and PNG frames from Pillow, and index entries validated as
`svdflow.outputs.entry.IndexEntry`. The browser is driven over the DevTools protocol with
websocket-client.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import imageio_ffmpeg
import numpy as np
import pytest
import websocket  # websocket-client
from conftest import run_cli, write_image
from PIL import Image

from svdflow.errors import UsageError
from svdflow.outputs.entry import IndexEntry
from svdflow.outputs.upgrade import upgrade_entry
from svdflow.report import Card, sweep_layout, write_report

CHROMIUM = shutil.which("chromium")
W, H, T = 112, 64, 8
SCRIPT_ERROR = ("job 'broken': the pipeline failed: RuntimeError: <script>window.__pwned=1</script> "
                "& \"quoted\" <b>not bold</b>")


# ---------------------------------------------------------------------------------------------
# A real output folder, without the renderer


def frames_for(seed: int) -> np.ndarray:
    """T frames whose first one is a flat, seed-specific colour (so posters can be checked) with a moving bar."""
    base = np.array([(60 * seed + 40) % 256, 90, (200 - 50 * seed) % 256], dtype=np.int32)
    frames = np.empty((T, H, W, 3), dtype=np.uint8)
    for i in range(T):
        frame = np.broadcast_to(base + i * 18, (H, W, 3)).clip(0, 255).astype(np.uint8).copy()
        if i:
            frame[:, (i * 12) % W: (i * 12) % W + 10] = 255
        frames[i] = frame
    return frames


def write_mp4(path: Path, frames: np.ndarray, fps: float = 7) -> None:
    writer = imageio_ffmpeg.write_frames(str(path), (W, H), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=16, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def write_animated(path: Path, frames: np.ndarray, fmt: str) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:], duration=140, loop=0)


def write_pngs(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_record(root: Path, fmt: str, name: str) -> dict:
    path = root / name
    if path.is_dir():
        data = b"".join(p.read_bytes() for p in sorted(path.iterdir()))
        return {"format": fmt, "file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return {"format": fmt, "file": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


PARAMS = {"num_frames": T, "num_inference_steps": 4, "fps": 7, "playback_fps": 7.0, "motion_bucket_id": 127,
          "noise_aug_strength": 0.02, "min_guidance_scale": 1.0, "max_guidance_scale": 3.0, "width": W,
          "height": H, "resize": "crop", "seed": 42}


def make_entry(job_id: str, *, item_id: str | None = None, status: str = "done", params: dict | None = None,
               sweep: dict | None = None, uri: str, input_sha: str | None, outputs: list | None = None,
               error: dict | None = None, finished: float = 1_700_000_000.0) -> dict:
    """An index entry in the shape svdflow 0.1 wrote (index format 1), which still loads (validated here)."""
    params = {**PARAMS, **(params or {})}
    done = status == "done"
    fetched = error is None or error["stage"] != "fetch"
    model = {"source": "builtin:tiny", "revision": None, "variant": None}
    entry = {
        "id": job_id, "item_id": item_id or job_id, "status": status,
        "key": hashlib.sha256(job_id.encode()).hexdigest() if fetched else None,
        "key_material": {"render_version": "1", "input_sha256": input_sha or "0" * 64, "params": params, "model": model,
                         "output": {"formats": ["mp4"], "crf": 18}} if fetched else None,
        "params": params, "seed": params["seed"], "seed_origin": "item", "sweep": sweep or {},
        "input": {"uri": uri, "sha256": input_sha, "source_size": [96, 64] if input_sha else None},
        "model": {**model, "resolved_revision": None},
        "hardware": {"profile": "cpu", "device": "cpu", "dtype": "float32", "offload": "none",
                     "forward_chunking": False, "decode_chunk_size": None, "compile": False},
        "outputs": outputs or [],
        "frames_sha256": hashlib.sha256(job_id.encode()).hexdigest() if done else None,
        "output": {"formats": ["mp4"], "crf": 18},
        "timings": {"fetch_s": 0.01, "input_wait_s": 0.0, "render_s": 1.5, "encode_s": 0.1, "total_s": 1.61}
        if done else {},
        "versions": {"svdflow": "0.1.0", "render_version": "1"},
        "error": error,
        "run": {"name": "review-demo", "manifest": "/campaigns/review-demo.yaml"},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
        "finished_unix": finished,
    }
    IndexEntry.model_validate(upgrade_entry(entry))
    return entry


class _Counting(http.server.SimpleHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):
        type(self).hits.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real HTTP server on loopback serving input images; `.hits` lists the paths requested."""
    folder = tmp_path_factory.mktemp("served")
    write_image(folder / "rocket.png", 120, 80, seed=7)
    handler = type("Handler", (_Counting,), {"hits": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(folder), **k))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}", folder=folder, hits=handler.hits)
    httpd.shutdown()
    httpd.server_close()


def build_output_dir(root: Path, server) -> Path:
    """7 jobs: an http input (mp4 + webp), a 3-job sweep, a render failure with markup in its error,
    a fetch failure with an odd path, and a job with only gif + PNG frames."""
    out = root / "renders"
    out.mkdir(parents=True)
    images = root / "images"
    city = write_image(images / "city.png", 96, 64, seed=1)
    cat = write_image(images / "cat.png", 64, 96, seed=2)
    entries = []

    write_mp4(out / "rocket.mp4", frames_for(0))
    write_animated(out / "rocket.webp", frames_for(0), "WEBP")
    entries.append(make_entry("rocket", uri=f"{server.url}/rocket.png",
                              input_sha=sha256_file(server.folder / "rocket.png"), params={"motion_bucket_id": 180},
                              outputs=[output_record(out, "mp4", "rocket.mp4"),
                                       output_record(out, "webp", "rocket.webp")], finished=1_700_000_001))
    for n, motion in enumerate((60, 127, 200)):
        job = f"city-m{motion}"
        write_mp4(out / f"{job}.mp4", frames_for(n + 1))
        entries.append(make_entry(job, item_id="city", uri=str(city), input_sha=sha256_file(city),
                                  params={"motion_bucket_id": motion, "seed": 7}, sweep={"motion_bucket_id": motion},
                                  outputs=[output_record(out, "mp4", f"{job}.mp4")], finished=1_700_000_010 + n))
    entries.append(make_entry("broken", status="failed", uri=str(cat), input_sha=sha256_file(cat),
                              params={"seed": 3}, finished=1_700_000_020,
                              error={"type": "RenderError", "message": SCRIPT_ERROR, "stage": "render"}))
    lost = str(root / 'missing & "odd" <name>.png')
    entries.append(make_entry("lost", status="failed", uri=lost, input_sha=None, params={"seed": 5},
                              finished=1_700_000_030,
                              error={"type": "InputError", "stage": "fetch",
                                     "message": f"{lost}: file not found; check the path"}))
    write_animated(out / "cat.gif", frames_for(4), "GIF")
    write_pngs(out / "cat_frames", frames_for(4))
    entries.append(make_entry("cat", uri=str(cat), input_sha=sha256_file(cat), params={"seed": 11, "fps": 12},
                              outputs=[output_record(out, "gif", "cat.gif"),
                                       output_record(out, "frames", "cat_frames")], finished=1_700_000_040))
    write_index(out, entries)
    return out


def write_index(out: Path, entries: list[dict]) -> None:
    for entry in entries:  # sidecars first, as the executor does; the index is newer
        (out / f"{entry['id']}.json").write_text(json.dumps(entry, indent=2))
    document = {"svdflow_index": 1, "name": "review-demo", "manifest": "/campaigns/review-demo.yaml",
                "updated_at": "2023-11-14T22:14:00Z", "jobs": entries}
    (out / "index.json").write_text(json.dumps(document, indent=2))


@pytest.fixture(scope="module")
def report(tmp_path_factory, server):
    """(output dir, page path, page text), written once for the read-only checks."""
    out = build_output_dir(tmp_path_factory.mktemp("report"), server)
    page = write_report(str(out))
    return out, Path(page), Path(page).read_text(encoding="utf-8")


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def elements(page: str) -> list[tuple[str, dict]]:
    parser = _Elements()
    parser.feed(page)
    return parser.elements


def videos_of(page: str) -> list[tuple[dict, list[dict]]]:
    """Each <video> of the page with its <source> elements, in page order."""
    videos: list[tuple[dict, list[dict]]] = []
    for tag, attrs in elements(page):
        if tag == "video":
            videos.append((attrs, []))
        elif tag == "source":
            videos[-1][1].append(attrs)
    return videos


def cards_of(page: str) -> list[dict]:
    return [a for tag, a in elements(page) if tag == "article" and "card" in a.get("class", "").split()]


# ---------------------------------------------------------------------------------------------
# The HTML


def test_page_is_written_beside_the_index_with_one_card_per_job(report):
    out, page, text = report
    assert page == out / "index.html"
    assert text.startswith("<!doctype html>")
    assert [c["id"] for c in cards_of(text)] == [
        "job-rocket", "job-city-m60", "job-city-m127", "job-city-m200", "job-broken", "job-lost", "job-cat"]
    assert {c["id"]: c["data-status"] for c in cards_of(text)}["job-broken"] == "failed"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporaries left behind"


def test_a_big_campaign_is_paged_and_each_status_filter_pages_the_whole_campaign(tmp_path, server, monkeypatch):
    """Pages of about PAGE_CARDS cards (2 here; a sweep stays whole), a pager of a fixed size, status
    filters as page sets of their own, every link inside the folder, stale pages of a bigger report gone."""
    out = build_output_dir(tmp_path, server)
    (out / "report" / "pages").mkdir(parents=True)
    (out / "report" / "pages" / "all-9.html").write_text("an earlier, longer report's page")
    monkeypatch.setattr("svdflow.report.page.PAGE_CARDS", 2)
    write_report(str(out))

    pages = {str(p.relative_to(out)): p.read_text(encoding="utf-8")
             for p in [out / "index.html", *sorted((out / "report" / "pages").iterdir())]}
    cards = {name: [c["id"][len("job-"):] for c in cards_of(text)] for name, text in pages.items()}
    assert cards == {
        "index.html": ["rocket"],
        "report/pages/all-2.html": ["city-m60", "city-m127", "city-m200"],  # a sweep is never split
        "report/pages/all-3.html": ["broken", "lost"],
        "report/pages/all-4.html": ["cat"],
        "report/pages/done-1.html": ["rocket"],
        "report/pages/done-2.html": ["city-m60", "city-m127", "city-m200"],
        "report/pages/done-3.html": ["cat"],
        "report/pages/failed-1.html": ["broken", "lost"],
    }
    nav = pages["report/pages/all-3.html"].split('<nav class="pager" aria-label="pages">')[1].split("</nav>")[0]
    assert re.findall(r'<(?:a href="([^"]*)"|span[^>]*)>([^<]*)<', nav) == [
        ("report/pages/all-2.html", "‹ previous"), ("index.html", "1"), ("report/pages/all-2.html", "2"),
        ("", "3"), ("report/pages/all-4.html", "4"), ("report/pages/all-4.html", "next ›")]
    assert '<span aria-current="page">3</span>' in nav
    assert pages["index.html"].count('<nav class="pager"') == 2  # above and below the cards
    assert '<nav class="pager"' not in pages["report/pages/failed-1.html"]  # one page: no pager
    filters = [(a["data-filter"], a["href"], a.get("aria-current")) for tag, a in elements(pages["report/pages/all-3.html"])
               if tag == "a" and "data-filter" in a]
    assert filters == [("all", "index.html", "page"), ("done", "report/pages/done-1.html", None),
                       ("failed", "report/pages/failed-1.html", None)]
    for name, text in pages.items():
        # a page under report/pages/ resolves its links against the output folder, as index.html does
        base = [a["href"] for tag, a in elements(text) if tag == "base"]
        assert base == ([] if name == "index.html" else ["../../"]), name
        here = (out / name).parent / (base[0] if base else "")
        for tag, attrs in elements(text):
            if tag == "base":
                continue
            for attr in ("src", "href", "poster", "data-fallback"):
                if attrs.get(attr):
                    target = (here / urllib.parse.unquote(attrs[attr])).resolve()
                    assert target.exists() and target.is_relative_to(out.resolve()), (name, tag, attrs[attr])
    assert "<article" not in pages.get("report/pages/all-9.html", "")  # the stale page is gone
    assert "report/pages/all-9.html" not in pages


def test_markup_in_errors_ids_and_uris_is_escaped(report):
    _, _, text = report
    assert "<script>window.__pwned" not in text
    assert "<b>not bold</b>" not in text
    # escaped as Jinja2's autoescape (markupsafe) writes it: quotes as &#34; and &#39;
    assert ("RuntimeError: &lt;script&gt;window.__pwned=1&lt;/script&gt; &amp; &#34;quoted&#34; "
            "&lt;b&gt;not bold&lt;/b&gt;") in text
    assert 'missing &amp; &#34;odd&#34; &lt;name&gt;.png' in text
    assert "<name>" not in text
    # the only <script> is the page's own
    assert [tag for tag, _ in elements(text)].count("script") == 1


def test_every_src_and_href_is_relative_and_inside_the_output_dir(report):
    out, _, text = report
    links = [(tag, name, value) for tag, attrs in elements(text) for name, value in attrs.items()
             if name in ("src", "href", "poster", "data-fallback")]
    assert len(links) >= 20
    for tag, name, value in links:
        assert "http" not in value and "://" not in value, (tag, name, value)
        assert not value.startswith(("/", "\\")) and ".." not in value.split("/"), (tag, name, value)
        assert (out / urllib.parse.unquote(value)).exists(), (tag, name, value)


def test_cards_show_seed_micro_conditioning_status_and_error(report):
    _, _, text = report
    rocket = text[text.index('id="job-rocket"'):text.index('id="job-city-m60"')]
    for shown in ("seed</dt><dd>42", "fps</dt><dd>7", "motion_bucket_id</dt><dd>180",
                  "noise_aug_strength</dt><dd>0.02", "num_frames</dt><dd>8", "steps</dt><dd>4",
                  "guidance</dt><dd>1–3", "size</dt><dd>112×64 crop", ">done</span>"):
        assert shown in rocket, shown
    broken = text[text.index('id="job-broken"'):text.index('id="job-lost"')]
    assert ">failed</span>" in broken and '<div class="error"><b>RenderError at render</b><pre>' in broken
    assert "no video: the job failed" in broken


def test_video_elements_use_the_mp4_with_a_first_frame_poster(report):
    out, _, text = report
    videos = {sources[-1]["src"]: (video, sources) for video, sources in videos_of(text)}
    assert sorted(videos) == ["city-m127.mp4", "city-m200.mp4", "city-m60.mp4", "rocket.mp4"]
    rocket, sources = videos["rocket.mp4"]
    assert sources == [{"src": "rocket.mp4", "type": 'video/mp4; codecs="avc1.64001F"'}]
    for flag in ("muted", "loop", "playsinline"):
        assert flag in rocket
    # preload=none: a page loads its posters, and a video only once it is played
    assert rocket["preload"] == "none" and rocket["poster"] == "report/posters/rocket.jpg"
    assert rocket["data-fallback"] == "rocket.webp"
    # the poster shows as an image; the <video> waits in a template until the card is hovered (sheet.js)
    media = text.split('id="job-rocket"')[1].split('<div class="media"')[1].split("</div>")[0]
    assert re.sub(r"<source [^>]*>", "", media) == (
        ' style="aspect-ratio:112/64"><img class="poster" loading="lazy" src="report/posters/rocket.jpg" '
        'alt="first frame of rocket">'
        '<template class="player"><video poster="report/posters/rocket.jpg" muted loop playsinline preload="none" '
        'data-fallback="rocket.webp"></video></template>')
    # no mp4: the animated gif is shown as an image
    assert ("img", {"class": "anim", "loading": "lazy", "src": "cat.gif", "alt": "cat"}) in elements(text)


def test_posters_are_the_first_frame(report):
    out, _, _ = report
    for job, seed in (("rocket", 0), ("city-m60", 1), ("city-m200", 3), ("cat", 4)):
        poster = np.asarray(Image.open(out / "report" / "posters" / f"{job}.jpg").convert("RGB"), dtype=float)
        assert poster.shape == (H, W, 3)
        first = frames_for(seed)[0].astype(float)
        assert np.abs(poster.mean(axis=(0, 1)) - first.mean(axis=(0, 1))).max() < 6, job
    assert not (out / "report" / "posters" / "broken.jpg").exists()


def test_inputs_are_copied_as_thumbnails_including_remote_ones(report, server):
    out, _, text = report
    thumbs = sorted((out / "report" / "inputs").iterdir())
    assert len(thumbs) == 3  # rocket (over HTTP), city (shared by the sweep), cat (shared by two jobs)
    assert "/rocket.png" in server.hits
    rocket = text[text.index('id="job-rocket"'):text.index('id="job-city-m60"')]
    assert '<img loading="lazy" src="report/inputs/' in rocket
    for thumb in thumbs:
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and max(image.size) <= 320
    lost = text[text.index('id="job-lost"'):text.index('id="job-cat"')]
    assert "input unavailable" in lost and "file not found" in lost


def test_sweep_jobs_share_one_grid_labelled_by_their_values(report):
    _, _, text = report
    start = text.index('<section class="sweep" data-item="city">')
    section = text[start:text.index("</section>", start)]
    assert "sweep: motion_bucket_id · 3 jobs" in section
    assert section.count('class="card') == 3
    for column, motion in enumerate((60, 127, 200), start=1):
        # the grid places the card from outside: its own markup is the same on every page
        assert re.search(f'<div class="cell" style="grid-row:1;grid-column:{column}"><article [^>]*'
                         f'id="job-city-m{motion}"', section)
        card = section[section.index(f'id="job-city-m{motion}"'):]
        assert f'<p class="swept">motion_bucket_id={motion}</p>' in card
    assert "grid-template-columns:repeat(3,var(--card))" in section


def test_two_parameter_sweeps_form_a_matrix():
    def card(order, motion, aug):
        entry = make_entry(f"c{order}", item_id="c", uri="/in.png", input_sha=None,
                           sweep={"motion_bucket_id": motion, "noise_aug_strength": aug})
        return Card(IndexEntry.model_validate(upgrade_entry(entry)), order, f"c{order}")

    cards = [card(0, 60, 0.1), card(1, 60, 0.02), card(2, 200, 0.02), card(3, 200, 0.1), card(4, 127, 0.1)]
    # rows: motion 60, 127, 200; columns: aug 0.02, 0.1; the missing (127, 0.02) cell stays empty
    assert sweep_layout(cards) == {0: (1, 2), 1: (1, 1), 2: (3, 1), 3: (3, 2), 4: (2, 2)}


def test_rerun_reuses_thumbnails_and_drops_those_of_removed_jobs(tmp_path, server):
    out = build_output_dir(tmp_path, server)
    write_report(str(out))
    fetches = len(server.hits)
    poster = out / "report" / "posters" / "city-m60.jpg"
    before = poster.stat().st_mtime_ns
    write_report(str(out))
    # the entry records the input's sha256 and a thumbnail of that content exists: no fetch
    assert len(server.hits) == fetches
    assert poster.stat().st_mtime_ns == before

    index = json.loads((out / "index.json").read_text())
    kept = [e for e in index["jobs"] if e["id"] not in ("rocket", "city-m200")]
    for job in ("rocket", "city-m200"):
        (out / f"{job}.json").unlink()
    write_index(out, kept)
    write_report(str(out))
    assert sorted(p.name for p in (out / "report" / "posters").iterdir()) == [
        "cat.jpg", "city-m127.jpg", "city-m60.jpg"]
    assert len(list((out / "report" / "inputs").iterdir())) == 2  # city, cat
    assert len(cards_of((out / "index.html").read_text())) == 5


def test_no_index_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as caught:
        write_report(str(tmp_path))
    assert str(caught.value) == (f"{tmp_path}: no index.jsonl here; run `svdflow run MANIFEST` first, "
                                 "or pass the output folder of a run")


def test_an_index_cannot_point_the_page_outside_the_folder(tmp_path):
    out = tmp_path / "renders"
    out.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"not yours")
    entry = make_entry("odd", uri=str(tmp_path / "nowhere.png"), input_sha=None,
                       outputs=[{"format": "mp4", "file": "../secret.mp4", "sha256": "0", "bytes": 9},
                                {"format": "mp4", "file": str(tmp_path / "secret.mp4"), "sha256": "0", "bytes": 9},
                                {"format": "gif", "file": "gone.gif", "sha256": "0", "bytes": 9}])
    write_index(out, [entry])
    text = Path(write_report(str(out))).read_text()
    assert "secret.mp4" not in [a.get("src") for _, a in elements(text)]
    assert not any("secret" in v for _, a in elements(text) for k, v in a.items() if k in ("src", "href"))
    assert "&#39;../secret.mp4&#39; is not a file inside this folder; not shown" in text
    assert "gone.gif is missing from this folder" in text
    assert "no playable output in this folder" in text


def test_remote_folders_and_broken_indexes_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match=r"^memory://renders: reports are written into local folders only; "):
        write_report("memory://renders")
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"index.json: cannot be read as JSON \(.*\); run `svdflow run MANIFEST` "):
        write_report(str(tmp_path))
    (tmp_path / "index.json").write_text("[]")
    with pytest.raises(UsageError, match=r'index.json: not an svdflow index \(no "jobs" list\)'):
        write_report(str(tmp_path))


def test_an_empty_index_gives_a_page_that_says_so(tmp_path):
    write_index(tmp_path, [])
    text = Path(write_report(str(tmp_path))).read_text()
    assert cards_of(text) == [] and "index.jsonl records no job yet" in text


def test_entries_that_do_not_fit_the_index_format_are_listed_not_dropped_silently(tmp_path):
    image = write_image(tmp_path / "in.png")
    good = make_entry("good", uri=str(image), input_sha=sha256_file(image))
    odd = {**make_entry("odd", uri=str(image), input_sha=None), "status": "<b>lost</b>"}
    write_index(tmp_path, [good, odd])
    (tmp_path / "odd.json").unlink()
    text = Path(write_report(str(tmp_path))).read_text()
    assert [c["id"] for c in cards_of(text)] == ["job-good"]
    assert "<summary>1 index entry could not be read and is not shown</summary>" in text
    assert "index.json: job &#39;odd&#39;: status: Input should be &#39;done&#39; or &#39;failed&#39;</li>" in text


def test_cli_report(report, tmp_path, capsys):
    out, page, _ = report
    code, stdout, stderr = run_cli(capsys, "report", str(out))
    assert code == 0, stderr
    assert stdout.strip() == str(page)
    code, _, stderr = run_cli(capsys, "report", str(tmp_path))
    assert code == 2
    assert stderr.strip() == (f"error: {tmp_path}: no index.jsonl here; run `svdflow run MANIFEST` "
                              "first, or pass the output folder of a run")


# ---------------------------------------------------------------------------------------------
# In a real browser: headless Chromium driven over the DevTools protocol


class DevTools:
    """A Chrome DevTools Protocol session over websocket-client: JSON commands, replies matched by id."""

    def __init__(self, ws_url: str, timeout_s: float = 30):
        self.ws = websocket.create_connection(ws_url, timeout=timeout_s)
        self.last_id = 0

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:  # events and other replies are skipped
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, session: str, expression: str):
        result = self.call("Runtime.evaluate", session, expression=expression, awaitPromise=True,
                           returnByValue=True, userGesture=False)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")

# Waits until every image is decoded (videos are preload=none: they load when played), then plays
# each video until a frame was really decoded and presented: proof that this browser plays the codec.
PROBE_MEDIA = """(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const played_from = v => decodeURIComponent(v.currentSrc.split('/').pop());
  const videos = () => [...document.querySelectorAll('video')];
  const until = async (ok, ms) => { const end = Date.now() + ms; while (!ok() && Date.now() < end) await sleep(25); };
  await until(() => [...document.images].every(i => i.complete), 10000);
  // a card's <video> is made when it is first hovered (its poster shows until then)
  document.querySelectorAll('.card').forEach(c => { c.dispatchEvent(new MouseEvent('mouseenter'));
                                                    c.dispatchEvent(new MouseEvent('mouseleave')); });
  const played = {};
  for (const v of videos()) {
    v.scrollIntoView();
    try { await v.play(); } catch (e) { played[played_from(v)] = String(e); continue; }
    await until(() => v.currentTime > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0, 5000);
    v.pause();
    played[played_from(v)] = v.getVideoPlaybackQuality().totalVideoFrames;
  }
  window.scrollTo(0, 0);
  const error = document.querySelector('#job-broken .error pre');
  const box = error.getBoundingClientRect();
  return {
    canH264: document.createElement('video').canPlayType('video/mp4; codecs="avc1.64001F"'),
    videos: videos().map(v => ({src: played_from(v), duration: v.duration, width: v.videoWidth,
                                error: v.error && v.error.code, played: played[played_from(v)]})),
    images: [...document.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth})),
    errorText: error.innerText, errorShown: box.width > 0 && box.height > 0
      && getComputedStyle(error).visibility === 'visible',
    pwned: window.__pwned !== undefined,
  };
})()"""

# Whether every image of the page loaded (they load lazily, after the load event: waited for, up to 10 s).
IMAGES_LOADED = """(async () => {
  const end = Date.now() + 10000;
  while (![...document.images].every(i => i.complete) && Date.now() < end) await new Promise(r => setTimeout(r, 25));
  return [...document.images].every(i => i.complete && i.naturalWidth > 0);
})()"""

VISIBLE_CARDS = """[...document.querySelectorAll('.card')]
  .filter(c => c.getBoundingClientRect().height > 0 && getComputedStyle(c).visibility === 'visible')
  .map(c => c.id)"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a throw-away profile, started once for the module's tests (each test
    opens pages of its own in it, closed after the test); yields its DevTools connection."""
    if CHROMIUM is None:
        pytest.skip("no `chromium` on PATH: install it (.ci/install-chromium runs `apt-get install -y "
                    "chromium`) to check the report in a real browser")
    folder = tmp_path_factory.mktemp("chromium")
    profile = folder / "chromium-profile"
    log = open(folder / "chromium.log", "wb")
    process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"],
                               stdout=log, stderr=subprocess.STDOUT)
    devtools = None
    try:
        port_file = profile / "DevToolsActivePort"  # "<port>\n<browser websocket path>" once it listens
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().split()) == 2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("chromium did not start:\n" + (folder / "chromium.log").read_text()[-3000:])
            time.sleep(0.05)
        port, path = port_file.read_text().split()
        devtools = DevTools(f"ws://127.0.0.1:{port}{path}")
        yield devtools
    finally:
        if devtools is not None:
            try:
                devtools.call("Browser.close")
            except (OSError, websocket.WebSocketException, RuntimeError):
                pass
            devtools.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def chromium(browser):
    """(DevTools, opener of a new page in the module's Chromium); the pages a test opened are closed after it."""
    devtools, opened = browser, []

    def open_page(url: str) -> str:
        target = devtools.call("Target.createTarget", url=url)["targetId"]
        opened.append(target)
        session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        deadline = time.monotonic() + 15
        # the new tab starts on about:blank, which is "complete" before the page commits
        while devtools.evaluate(session, "location.href === 'about:blank' || document.readyState") != "complete":
            assert time.monotonic() < deadline, f"{url} did not finish loading"
            time.sleep(0.05)
        return session

    yield devtools, open_page
    for target in opened:
        devtools.call("Target.closeTarget", targetId=target)


@pytest.mark.slow  # a real Chromium process
def test_page_plays_in_headless_chromium(report, chromium, tmp_path):
    out, page, _ = report
    devtools, open_page = chromium
    session = open_page(page.as_uri())
    found = devtools.evaluate(session, PROBE_MEDIA)

    # Debian's chromium decodes H.264 (through its bundled FFmpeg); the page falls back to the
    # webp/gif only where a browser cannot.
    assert found["canH264"] in ("probably", "maybe"), found
    assert sorted(v["src"] for v in found["videos"]) == [
        "city-m127.mp4", "city-m200.mp4", "city-m60.mp4", "rocket.mp4"]
    for video in found["videos"]:
        assert video["error"] is None, video
        assert 0 < video["duration"] < 10 and video["width"] == W, video
        assert isinstance(video["played"], int) and video["played"] > 0, video
    assert len(found["images"]) >= 7  # 6 input thumbnails + the gif
    for image in found["images"]:
        assert image["width"] > 0, image
    assert SCRIPT_ERROR in found["errorText"] and found["errorShown"], found
    assert not found["pwned"]

    # --window-size sizes the window; the viewport inside is smaller, so pin it for the screenshot
    devtools.call("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1,
                  mobile=False)
    shot = tmp_path / "report.png"
    shot.write_bytes(base64.b64decode(devtools.call("Page.captureScreenshot", session, format="png")["data"]))
    assert shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 100  # not a blank page

    # and the whole page, for a person to look at
    height = devtools.call("Page.getLayoutMetrics", session)["cssContentSize"]["height"]
    full = devtools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1})
    (tmp_path / "report-full.png").write_bytes(base64.b64decode(full["data"]))

    # The controls, clicked for real: the status filters are pages of their own.
    all_cards = devtools.evaluate(session, VISIBLE_CARDS)
    assert len(all_cards) == 7
    follow(devtools, session, "document.querySelector('[data-filter=failed]').click()")
    assert devtools.evaluate(session, VISIBLE_CARDS) == ["job-broken", "job-lost"]
    assert devtools.evaluate(session, "document.querySelector('#job-broken .media').childElementCount") == 1
    follow(devtools, session, "document.querySelector('[data-filter=done]').click()")
    assert sorted(devtools.evaluate(session, VISIBLE_CARDS)) == sorted(
        ["job-rocket", "job-city-m60", "job-city-m127", "job-city-m200", "job-cat"])
    assert devtools.evaluate(session, IMAGES_LOADED)
    follow(devtools, session, "document.querySelector('[data-filter=all]').click()")
    assert devtools.evaluate(session, "location.href") == page.as_uri()
    devtools.evaluate(session, "const s = document.getElementById('sort'); s.value = 'seed';"
                               "s.dispatchEvent(new Event('change'))")
    # seeds: broken 3, lost 5, the city sweep 7 (as one unit), cat 11, rocket 42
    assert devtools.evaluate(session, VISIBLE_CARDS) == [
        "job-broken", "job-lost", "job-city-m60", "job-city-m127", "job-city-m200", "job-cat", "job-rocket"]
    devtools.evaluate(session, "document.getElementById('desc').click()")
    assert devtools.evaluate(session, VISIBLE_CARDS)[0] == "job-rocket"

    # Hovering a card makes its video (until then its poster shows) and plays it.
    assert devtools.evaluate(session, "document.querySelectorAll('video').length") == 0
    assert devtools.evaluate(session, "document.querySelector('#job-city-m60 .media img').getAttribute('src')") \
        == "report/posters/city-m60.jpg"
    assert devtools.evaluate(session, """(async () => {
      const card = document.getElementById('job-city-m60');
      card.dispatchEvent(new MouseEvent('mouseenter'));
      const v = card.querySelector('video');
      const end = Date.now() + 3000;
      while (v.paused && Date.now() < end) await new Promise(r => setTimeout(r, 25));
      const playing = !v.paused;
      card.dispatchEvent(new MouseEvent('mouseleave'));
      return playing && v.paused;
    })()""")


def follow(devtools: DevTools, session: str, click: str) -> None:
    """Run `click`, which follows a link, and wait until the new page has loaded."""
    before = devtools.evaluate(session, "location.href")
    devtools.evaluate(session, click)
    deadline = time.monotonic() + 15
    while _while_navigating(devtools, session, "location.href") in (before, None) or \
            _while_navigating(devtools, session, "document.readyState") != "complete":
        assert time.monotonic() < deadline, f"{click} led nowhere"
        time.sleep(0.05)


def _while_navigating(devtools: DevTools, session: str, expression: str):
    """`expression`'s value, or None when it reached the page as the page was being replaced (Chromium
    then answers "Inspected target navigated or closed": asked again, the new page answers)."""
    try:
        return devtools.evaluate(session, expression)
    except RuntimeError as exc:
        if "Inspected target navigated or closed" not in str(exc):
            raise
        return None


@pytest.mark.slow  # a real Chromium process
def test_an_mp4_the_browser_cannot_play_falls_back_to_the_webp(tmp_path, chromium):
    out = tmp_path / "renders"
    out.mkdir()
    image = write_image(tmp_path / "in.png")
    for job in ("glitch", "garbled"):  # not decodable, so there is no poster either
        (out / f"{job}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    write_animated(out / "glitch.webp", frames_for(2), "WEBP")
    write_index(out, [make_entry("glitch", uri=str(image), input_sha=sha256_file(image),
                                 outputs=[output_record(out, "mp4", "glitch.mp4"),
                                          output_record(out, "webp", "glitch.webp")]),
                      make_entry("garbled", uri=str(image), input_sha=sha256_file(image),
                                 outputs=[output_record(out, "mp4", "garbled.mp4")])])
    devtools, open_page = chromium
    session = open_page(Path(write_report(str(out))).as_uri())
    # preload=none: a video is first read when it is played, so hovering each card finds them broken
    shown = devtools.evaluate(session, """(async () => {
      document.querySelectorAll('.card').forEach(c => c.dispatchEvent(new MouseEvent('mouseenter')));
      const end = Date.now() + 10000;
      while (document.querySelector('video') && Date.now() < end) await new Promise(r => setTimeout(r, 25));
      const img = document.querySelector('#job-glitch .media img');
      while (img && !img.complete) await new Promise(r => setTimeout(r, 25));
      return {glitch: img && {src: img.getAttribute('src'), width: img.naturalWidth},
              garbled: document.querySelector('#job-garbled .media').innerHTML};
    })()""")
    assert shown == {"glitch": {"src": "glitch.webp", "width": W},
                     "garbled": '<div class="placeholder">this browser cannot play the video</div>'}


# The text of each line an element's text is laid out on, as the browser broke it.
LAID_OUT_LINES = """(selector => {
  const el = document.querySelector(selector), lines = new Map();
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const box = range.getClientRects()[0];
      if (!box) continue;
      const top = Math.round(box.top);
      lines.set(top, (lines.get(top) || '') + node.data[i]);
    }
  }
  return [...lines.entries()].sort((a, b) => a[0] - b[0]).map(e => e[1].trim());
})"""


@pytest.mark.slow  # a real Chromium process
def test_seeds_and_units_do_not_wrap_and_a_failed_card_says_its_error_once(tmp_path, chromium):
    """Laid out by Chromium: the largest seed on one line, inside its card; no unit ("s", "frames") on a
    line of its own; a job that failed to fetch its input shows that error once."""
    out = tmp_path / "renders"
    out.mkdir()
    write_mp4(out / "long.mp4", frames_for(1))
    image = write_image(tmp_path / "in.png")
    gone = str(tmp_path / "gone.png")
    message = f"{gone}: file not found; check the path (relative paths are resolved against the manifest's folder)"
    write_index(out, [
        make_entry("long", uri=str(image), input_sha=sha256_file(image), params={"seed": 2**63 - 1},
                   outputs=[output_record(out, "mp4", "long.mp4")]),
        make_entry("lost", status="failed", uri=gone, input_sha=None, params={"seed": 2**63 - 2},
                   error={"type": "InputError", "message": message, "stage": "fetch"})])
    devtools, open_page = chromium
    session = open_page(Path(write_report(str(out))).as_uri())
    devtools.call("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1,
                  mobile=False)

    def lines(selector: str) -> list[str]:
        return devtools.evaluate(session, f"{LAID_OUT_LINES}({json.dumps(selector)})")

    for job in ("long", "lost"):
        seed = lines(f"#job-{job} .params dd")
        assert seed == [str(2**63 - 1 if job == "long" else 2**63 - 2)], seed
        assert devtools.evaluate(session, f"""(() => {{
          const dd = document.querySelector('#job-{job} .params dd').getBoundingClientRect();
          const card = document.querySelector('#job-{job}').getBoundingClientRect();
          return dd.left >= card.left && dd.right <= card.right; }})()""")
    clip = next(i for i, row in enumerate(devtools.evaluate(
        session, "[...document.querySelectorAll('#job-long .params dt')].map(d => d.textContent)")) if row == "clip")
    for selector in (f"#job-long .params dd:nth-of-type({clip + 1})", "#job-long .files span + span"):
        text = lines(selector)
        # every unit on the line of its number: "... 1.14 s" may wrap before "1.14", never before "s"
        assert text and not [line for line in text if re.match(r"(s|frames)\b", line)], (selector, text)
    failed = devtools.evaluate(session, "document.getElementById('job-lost').innerText")
    assert failed.count(message) == 1, failed


# ---------------------------------------------------------------------------------------------
# Every output format, masters, re-encodes and the clip options (issues 15 and 16)

CLIP_PARAMS = {"segments": 2, "loop": "pingpong", "interpolate": 2, "playback_fps": 14.0}


def build_formats_dir(root: Path) -> Path:
    """Three jobs written by svdflow's own encoders: 'every' in every format, chained, looping and
    interpolated (2 x 8 - 1 = 15 frames rendered, 28 there and back, 56 interpolated at 14 fps: 4 s),
    re-encoded from its master; 'h265' with only an H.265 video and a GIF; 'edited', whose index entry
    was edited to list the master as an output."""
    from svdflow.manifest.schema import JobParams
    from svdflow.outputs.masters import write_master
    from svdflow.outputs.post import post_process
    from svdflow.outputs.store import OutputStore
    from svdflow.outputs.writers import write_outputs

    out = root / "renders"
    out.mkdir(parents=True)
    image = write_image(root / "in.png", 96, 64)
    params = JobParams(**{**PARAMS, **CLIP_PARAMS})
    rendered = np.concatenate([frames_for(1), frames_for(2)[1:]])
    clip = post_process(rendered, params)
    written = write_outputs(clip, str(out), "every", ["mp4", "hevc", "webm", "prores", "gif", "frames"],
                            playback_fps=14.0)
    master = write_master(rendered, OutputStore(str(out)), "every", fps=7, provenance="")
    every = upgrade_entry(make_entry("every", uri=str(image), input_sha=sha256_file(image),
                                     params={**CLIP_PARAMS}))
    every.update(outputs=[output_record(out, w.format, os.path.basename(w.path)) for w in written],
                 master=master.model_dump(), encoded_from="master",
                 segments=[{"index": 0, "seed": 42, "render_s": 1.25}, {"index": 1, "seed": 7, "render_s": 1.5}])
    write_outputs(frames_for(3), str(out), "h265", ["hevc", "gif"], playback_fps=7)
    h265 = make_entry("h265", uri=str(image), input_sha=sha256_file(image),
                      outputs=[output_record(out, "hevc", "h265.hevc.mp4"), output_record(out, "gif", "h265.gif")])
    edited = make_entry("edited", uri=str(image), input_sha=sha256_file(image),
                        outputs=[output_record(out, "gif", "h265.gif"),
                                 {"format": "mp4", "file": ".svdflow/masters/every.mkv", "sha256": "0", "bytes": 9}])
    write_index(out, [every, h265, edited])
    return out


@pytest.fixture(scope="module")
def formats_report(tmp_path_factory):
    out = build_formats_dir(tmp_path_factory.mktemp("formats"))
    page = write_report(str(out))
    return out, Path(page), Path(page).read_text(encoding="utf-8")


def card_text(text: str, job: str) -> str:
    start = text.index(f'id="job-{job}"')
    return text[start:text.index("</article>", start)]


def test_videos_offer_hevc_webm_and_mp4_as_sources_in_that_order(formats_report):
    _, _, text = formats_report
    videos = {video["poster"]: sources for video, sources in videos_of(text)}
    assert videos["report/posters/every.jpg"] == [
        {"src": "every.hevc.mp4", "type": 'video/mp4; codecs="hvc1"'},
        {"src": "every.webm", "type": 'video/webm; codecs="vp9"'},
        {"src": "every.mp4", "type": 'video/mp4; codecs="avc1.64001F"'}]
    assert videos["report/posters/h265.jpg"] == [{"src": "h265.hevc.mp4", "type": 'video/mp4; codecs="hvc1"'}]
    assert [v.get("data-fallback") for v, _ in videos_of(text)] == ["every.gif", "h265.gif"]


def test_cards_link_prores_and_frames_and_show_the_master_the_keys_and_a_re_encode(formats_report):
    out, _, text = formats_report
    every = card_text(text, "every")
    assert re.findall(r'<a href="([^"]+)">([^<]+)</a>', every) == [
        ("every.mp4", "mp4"), ("every.hevc.mp4", "hevc"), ("every.webm", "webm"), ("every.mov", "prores (.mov)"),
        ("every.gif", "gif"), ("every_frames", "frames (PNG folder)"), ("every.json", "json")]
    master_bytes = (out / ".svdflow" / "masters" / "every.mkv").stat().st_size
    from svdflow.views import human_bytes

    assert f"<dt>master</dt><dd>.svdflow/masters/every.mkv ({human_bytes(master_bytes)}, lossless FFV1)</dd>" in every
    assert '<span class="badge reencoded"' in every and ">re-encoded</span>" in every
    entry = json.loads((out / "every.json").read_text())
    assert f"<dt>render key</dt><dd>{entry['render_key']}</dd>" in every
    assert f"<dt>output key</dt><dd>{entry['output_key']}</dd>" in every
    assert "<dt>encoded from</dt><dd>the master (an output-only change)</dd>" in every
    assert "<dt>segment 2</dt><dd>seed 7, 1.5\u00a0s</dd>" in every
    assert "reencoded" not in card_text(text, "h265") and "<dt>master</dt>" not in card_text(text, "h265")


def test_cards_show_the_clips_frames_and_duration(formats_report):
    _, _, text = formats_report
    every = card_text(text, "every")
    for shown in ("clip</dt><dd>56\u00a0frames · 4.00\u00a0s", "segments</dt><dd>2", "loop</dt><dd>pingpong",
                  "interpolate</dt><dd>×2", "<dt>frames</dt><dd>15 rendered, 56 written at 14\u00a0fps</dd>",
                  'data-s-frames="56"', 'data-s-duration_s="4.0"'):
        assert shown in every, shown
    h265 = card_text(text, "h265")
    assert "clip</dt><dd>8\u00a0frames · 1.14\u00a0s" in h265 and "segments</dt>" not in h265 and "loop</dt>" not in h265


def test_svdflows_own_folder_is_never_shown_as_an_output(formats_report):
    _, _, text = formats_report
    assert not [(tag, a) for tag, a in elements(text) for k, v in a.items()
                if k in ("src", "href", "poster", "data-fallback") and ".svdflow" in v]
    assert ("output &#39;.svdflow/masters/every.mkv&#39; is in svdflow&#39;s own folder .svdflow/, not an output; "
            "not shown") in card_text(text, "edited")


@pytest.mark.slow  # a real Chromium process
def test_each_video_plays_the_first_source_the_browser_can(formats_report, chromium):
    out, page, _ = formats_report
    devtools, open_page = chromium
    session = open_page(page.as_uri())
    found = devtools.evaluate(session, """(async () => {
      const sleep = ms => new Promise(r => setTimeout(r, ms));
      const end = Date.now() + 10000;
      while ([...document.querySelectorAll('video')].some(v => v.readyState < 1 && !v.error) && Date.now() < end)
        await sleep(25);
      const probe = document.createElement('video');
      const result = {hvc1: probe.canPlayType('video/mp4; codecs="hvc1"'), cards: {}};
      for (const id of ['every', 'h265']) {
        document.getElementById(`job-${id}`).dispatchEvent(new MouseEvent('mouseenter'));  // makes its video
        const media = document.querySelector(`#job-${id} .media`), v = media.querySelector('video');
        if (!v) { const img = media.querySelector('img'); result.cards[id] = {img: img && img.getAttribute('src')};
                  continue; }
        await v.play();
        const until = Date.now() + 5000;
        while (!(v.getVideoPlaybackQuality().totalVideoFrames > 0) && Date.now() < until) await sleep(25);
        v.pause();
        result.cards[id] = {src: decodeURIComponent(v.currentSrc.split('/').pop()), duration: v.duration,
                            frames: v.getVideoPlaybackQuality().totalVideoFrames};
      }
      return result;
    })()""")
    every, h265 = found["cards"]["every"], found["cards"]["h265"]
    # Debian's chromium has no H.265 decoder: it skips that source and plays the VP9 one; a browser that
    # has one plays H.265. Either way the video lasts the 4 s the card says.
    assert every["src"] == ("every.hevc.mp4" if found["hvc1"] else "every.webm"), found
    assert every["frames"] > 0 and abs(every["duration"] - 4.0) < 0.05, found
    if found["hvc1"]:
        assert h265["src"] == "h265.hevc.mp4" and h265["frames"] > 0, found
    else:  # nothing it can play: the job's GIF instead
        assert h265 == {"img": "h265.gif"}, found


# ---------------------------------------------------------------------------------------------
# Quality: scores on the cards, the qc views, the best variant of a sweep


def quality(motion: float, flicker: float, last_ssim: float, *, min_motion: float | None = 3.0,
            attempts: tuple[int, ...] = ()) -> dict:
    """An entry's quality record with these scores (the rest fixed), judged against min_motion."""
    from svdflow.quality.record import QualityRecord
    from svdflow.quality.rerolls import Attempt
    from svdflow.quality.scores import (
        ExposureScores,
        FidelityScores,
        FlickerScores,
        MotionScores,
        QualityScores,
    )
    from svdflow.quality.thresholds import QcThresholds
    from svdflow.quality.verdict import judge

    scores = QualityScores(
        frames=T, analysis_size=(W, H),
        motion=MotionScores(mean=motion, peak=motion * 2, dynamic=False, dynamic_pairs=0, dynamic_pairs_needed=2,
                            dynamic_threshold=27.0),
        flicker=FlickerScores(vbench=0.95, residual=flicker, brightness_jump=1.0),
        fidelity=FidelityScores(first_ssim=0.95, last_ssim=last_ssim, first_psnr=30.0, last_psnr=20.0),
        exposure=ExposureScores(dark_frames=0, blown_frames=0, min_sharpness=100.0, input_sharpness=120.0))
    thresholds = QcThresholds(min_motion=min_motion, rerolls=len(attempts)) if min_motion is not None else None
    verdict = judge(scores, thresholds) if thresholds else None
    tried = tuple(Attempt(attempt=n, seed=seed, scores=scores, verdict=verdict) for n, seed in enumerate(attempts))
    return QualityRecord(scores=scores, thresholds=thresholds, passed=verdict.passed if verdict else None,
                         failures=verdict.failures if verdict else (), kept=len(attempts) - 1 if attempts else 0,
                         attempts=tried).model_dump(mode="json")


@pytest.fixture(scope="module")
def scored_report(tmp_path_factory, server):
    """The review folder with scores: rocket and the city sweep scored (city-m60 below min_motion,
    city-m127 re-rolled twice), cat not scored (an older entry), broken and lost failed."""
    out = build_output_dir(tmp_path_factory.mktemp("scored"), server)
    index = json.loads((out / "index.json").read_text())
    scores = {"rocket": quality(5.0, 2.0, 0.8), "city-m60": quality(1.0, 1.0, 0.9),
              "city-m127": quality(4.0, 6.0, 0.5, attempts=(7, 4208420480898609162, 4412062767388202138)),
              "city-m200": quality(9.0, 3.0, 0.7)}
    for entry in index["jobs"]:
        if entry["id"] in scores:
            entry["quality"] = scores[entry["id"]]
    write_index(out, index["jobs"])
    write_report(str(out))
    pages = {str(p.relative_to(out)): p.read_text(encoding="utf-8")
             for p in [out / "index.html", *sorted((out / "report" / "pages").iterdir())]}
    return out, pages


def test_each_view_pages_the_whole_campaign_in_its_order(scored_report):
    _, pages = scored_report
    cards = {name: [c["id"][len("job-"):] for c in cards_of(text)] for name, text in pages.items()}
    unscored = ["broken", "lost", "cat"]  # last in every ranking, in index order
    assert cards == {
        "index.html": ["rocket", "city-m60", "city-m127", "city-m200", "broken", "lost", "cat"],
        "report/pages/done-1.html": ["rocket", "city-m60", "city-m127", "city-m200", "cat"],
        "report/pages/failed-1.html": ["broken", "lost"],
        "report/pages/not-passed-1.html": ["city-m60"],
        # m60 has the best rank sum with m200 (2 each), but did not pass: m200 is the best variant
        "report/pages/best-1.html": ["city-m200"],
        "report/pages/motion-most-1.html": ["city-m200", "rocket", "city-m127", "city-m60", *unscored],
        "report/pages/motion-least-1.html": ["city-m60", "city-m127", "rocket", "city-m200", *unscored],
        "report/pages/flicker-most-1.html": ["city-m127", "city-m200", "rocket", "city-m60", *unscored],
        "report/pages/drift-most-1.html": ["city-m127", "city-m200", "rocket", "city-m60", *unscored],
    }
    # did not pass keeps the sweep's grid, with only the card that did not pass in its own cell
    assert '<section class="sweep" data-item="city">' in pages["report/pages/not-passed-1.html"]
    assert '<div class="cell" style="grid-row:1;grid-column:1"><article' in pages["report/pages/not-passed-1.html"]
    # a ranking lists cards one by one
    assert '<section class="sweep"' not in pages["report/pages/motion-most-1.html"]
    picker = [(a.get("data-filter") or a.get("data-view"), a["href"], a.get("aria-current"))
              for tag, a in elements(pages["report/pages/motion-most-1.html"])
              if tag == "a" and ("data-filter" in a or "data-view" in a)]
    assert picker == [
        ("all", "index.html", None), ("done", "report/pages/done-1.html", None),
        ("failed", "report/pages/failed-1.html", None), ("not-passed", "report/pages/not-passed-1.html", None),
        ("best", "report/pages/best-1.html", None), ("motion-most", "report/pages/motion-most-1.html", "page"),
        ("motion-least", "report/pages/motion-least-1.html", None),
        ("flicker-most", "report/pages/flicker-most-1.html", None),
        ("drift-most", "report/pages/drift-most-1.html", None)]
    counts = re.findall(r'data-filter="([a-z-]+)"[^>]*>[^<]*<span>(\d+)</span>', pages["index.html"])
    assert counts == [("all", "7"), ("done", "5"), ("failed", "2"), ("not-passed", "1"), ("best", "1")]
    # every card is the same markup on every page that shows it
    for job in ("rocket", "city-m60", "city-m127", "city-m200", "cat"):
        shown = {re.search(f'<article [^>]*id="job-{job}".*?</article>', text, re.S).group(0)
                 for text in pages.values() if f'id="job-{job}"' in text}
        assert len(shown) == 1, job


def test_cards_show_scores_verdict_attempts_best_and_not_scored(scored_report):
    _, pages = scored_report
    text = pages["index.html"]

    def card(job: str) -> str:
        return re.search(f'<article [^>]*id="job-{job}".*?</article>', text, re.S).group(0)

    def scores(job: str) -> list[tuple[str, str]]:
        return re.findall(r"<dt [^>]*>([^<]+)</dt><dd[^>]*>([^<]+)</dd>", card(job).split('<dl class="scores">')[1])

    assert scores("rocket") == [("motion", "5\u00a0px/f"), ("flicker", "2"), ("SSIM first", "0.95"), ("SSIM last", "0.8")]
    assert '<span class="badge qc-passed" title="met every qc threshold">qc passed</span>' in card("rocket")
    assert '<p class="verdict">did not pass: min_motion: 1 &lt; 3</p>' in card("city-m60")
    assert '<dd class="failed">1\u00a0px/f</dd>' in card("city-m60") and "qc failed</span>" in card("city-m60")
    assert '<p class="attempts">3 attempts; kept #3, seed 4412062767388202138</p>' in card("city-m127")
    assert ">best</span>" in card("city-m200") and ">best</span>" not in card("city-m127")
    for job in ("cat", "broken"):
        assert '<p class="qc unscored"' in card(job) and ">not scored</p>" in card(job) and 'class="scores"' not in card(job)
    assert 'data-s-motion="9.0"' in card("city-m200") and 'data-s-passed="1"' in card("city-m200")
    assert 'data-s-motion=' not in card("cat") and 'data-s-passed=""' in card("cat")


def test_an_unscored_folder_writes_no_qc_views(report):
    out, _, text = report
    assert sorted(p.name for p in (out / "report" / "pages").iterdir()) == ["done-1.html", "failed-1.html"]
    assert "not scored: no quality views</span>" in text and 'data-view=' not in text


@pytest.mark.slow  # a real Chromium process
def test_the_sheet_ranked_by_motion_in_headless_chromium(scored_report, chromium, tmp_path):
    """The most-motion view, reached by its link, in order; its cards sorted again on the page by a score."""
    out, _ = scored_report
    devtools, open_page = chromium
    session = open_page((out / "index.html").as_uri())
    follow(devtools, session, "document.querySelector('[data-view=motion-most]').click()")
    assert devtools.evaluate(session, "location.href").endswith("/report/pages/motion-most-1.html")
    assert devtools.evaluate(session, VISIBLE_CARDS) == [
        "job-city-m200", "job-rocket", "job-city-m127", "job-city-m60", "job-broken", "job-lost", "job-cat"]
    assert devtools.evaluate(session, IMAGES_LOADED)
    devtools.evaluate(session, "const s = document.getElementById('sort'); s.value = 'flicker';"
                               "s.dispatchEvent(new Event('change'))")
    assert devtools.evaluate(session, VISIBLE_CARDS) == [
        "job-city-m60", "job-rocket", "job-city-m200", "job-city-m127", "job-broken", "job-lost", "job-cat"]
    devtools.call("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1,
                  mobile=False)
    shot = tmp_path / "ranked-by-motion.png"
    shot.write_bytes(base64.b64decode(devtools.call("Page.captureScreenshot", session, format="png")["data"]))
    with Image.open(shot) as image:
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 100  # not a blank page


def counted_renders(monkeypatch, tmp_path) -> list[str]:
    """The ids of the cards each report renders (not taken from the cache), with a cache key of the test's own."""
    from svdflow.report import sheet

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rendered: list[str] = []
    render_card = sheet.render_card

    def counting(card):
        rendered.append(card.id)
        return render_card(card)

    monkeypatch.setattr(sheet, "render_card", counting)
    return rendered


def test_a_second_report_reuses_the_cards_whose_entry_and_files_did_not_change(tmp_path, server, monkeypatch):
    """Cards come from report/cards.cache when nothing they show changed; a changed file, a changed entry
    or a cache record that does not verify under this user's key is rendered again."""
    rendered = counted_renders(monkeypatch, tmp_path)
    out = build_output_dir(tmp_path, server)
    first = Path(write_report(str(out))).read_text()
    # every card but lost's (its input cannot be fetched: tried again next time) is kept
    assert sorted(rendered) == sorted(["rocket", "city-m60", "city-m127", "city-m200", "broken", "lost", "cat"])
    cache = out / "report" / "cards.cache"
    assert len(re.findall(rb"^[0-9a-f]{64} [0-9a-f]{64} [0-9]+ [0-9]+$", cache.read_bytes(), re.M)) == 6
    rendered.clear()
    kept = cache.stat()
    again = Path(write_report(str(out))).read_text()
    assert rendered == ["lost"]
    assert (cache.stat().st_ino, cache.stat().st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)  # not rewritten
    assert re.sub(r"page written [0-9TZ:-]+", "", again) == re.sub(r"page written [0-9TZ:-]+", "", first)

    rendered.clear()
    os.utime(out / "cat.gif", ns=(time.time_ns(), time.time_ns()))  # a file the card shows changed
    index = json.loads((out / "index.json").read_text())
    index["jobs"][0]["params"]["noise_aug_strength"] = 0.05  # rocket's entry changed
    (out / "rocket.json").write_text(json.dumps(index["jobs"][0], indent=2))
    (out / "index.json").write_text(json.dumps(index, indent=2))
    write_report(str(out))
    assert sorted(rendered) == ["cat", "lost", "rocket"]

    rendered.clear()
    # a record whose markup was changed (its lengths kept) does not verify: rendered from the entry again
    cache.write_bytes(cache.read_bytes().replace(b">city-m60</h3>", b">CITY-M60</h3>", 1))
    text = Path(write_report(str(out))).read_text()
    assert "CITY-M60" not in text and sorted(rendered) == ["city-m60", "lost"]


def test_a_job_recorded_before_the_others_leaves_their_cached_cards_in_use(tmp_path, server, monkeypatch):
    """A card's place is stamped in per report, not part of its cache key: a job that comes first in the
    record (an item added at the top of a manifest) renders its own card only, and every card sorts by
    its new place."""
    rendered = counted_renders(monkeypatch, tmp_path)
    out = build_output_dir(tmp_path, server)
    write_report(str(out))
    rendered.clear()
    jobs = json.loads((out / "index.json").read_text())["jobs"]
    cat = tmp_path / "images" / "cat.png"
    first = make_entry("first", status="failed", uri=str(cat), input_sha=sha256_file(cat), params={"seed": 1},
                       error={"type": "RenderError", "message": "out of memory", "stage": "render"})
    (out / "first.json").write_text(json.dumps(first, indent=2))  # the other jobs' sidecars are untouched
    document = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**document, "jobs": [first, *jobs]}, indent=2))
    page = Path(write_report(str(out))).read_text()
    assert sorted(rendered) == ["first", "lost"]  # lost's input cannot be fetched: tried again every time
    assert re.findall(r'id="job-([^"]+)" data-status="[a-z]+" data-s-order="([^"]*)"', page) == [
        ("first", "0"), ("rocket", "1"), ("city-m60", "2"), ("city-m127", "3"), ("city-m200", "4"),
        ("broken", "5"), ("lost", "6"), ("cat", "7")]


def test_a_report_rewrites_only_the_pages_that_changed(tmp_path, server, monkeypatch):
    """A page whose bytes are the same is left as it is (only index.html, which says when it was
    written, is written every time); a changed card rewrites the pages that show it."""
    counted_renders(monkeypatch, tmp_path)
    monkeypatch.setattr("svdflow.report.page.PAGE_CARDS", 2)
    out = build_output_dir(tmp_path, server)
    write_report(str(out))
    pages = out / "report" / "pages"

    def stamps() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in pages.iterdir()}

    before = stamps()
    assert sorted(before) == ["all-2.html", "all-3.html", "all-4.html", "done-1.html", "done-2.html", "done-3.html",
                              "failed-1.html"]
    assert all("page written" not in (pages / name).read_text() for name in before)
    assert re.search(r"page written [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z</p>", (out / "index.html").read_text())
    os.utime(out / "cat.gif", ns=(time.time_ns(), time.time_ns()))  # cat's card is rendered again, the same
    write_report(str(out))
    assert stamps() == before
    cat = json.loads((out / "cat.json").read_text())
    cat["params"]["noise_aug_strength"] = 0.05  # cat's entry changed (its sidecar, newer than the index)
    (out / "cat.json").write_text(json.dumps(cat, indent=2))
    write_report(str(out))
    after = stamps()
    assert sorted(name for name in before if after[name] != before[name]) == ["all-4.html", "done-3.html"]
    assert "<dd>0.05</dd>" in (pages / "all-4.html").read_text()


def test_a_fifo_in_place_of_a_page_is_replaced_not_waited_on(tmp_path, server, monkeypatch):
    """A page is compared with what is there before it is replaced: a FIFO put there is neither waited
    on nor read (a blocking open would hang the report), and the page takes its place."""
    monkeypatch.setattr("svdflow.report.page.PAGE_CARDS", 2)
    out = build_output_dir(tmp_path, server)
    write_report(str(out))
    page = out / "report" / "pages" / "all-2.html"
    made = page.read_bytes()
    page.unlink()
    os.mkfifo(page)
    write_report(str(out))
    assert page.is_file() and not page.is_fifo() and page.read_bytes() == made


def test_a_linked_pages_folder_is_refused_and_its_files_untouched(tmp_path, server, monkeypatch):
    """report/pages is read (pages are compared before they are replaced), replaced and tidied: never
    through a link."""
    from svdflow.errors import SvdflowError

    counted_renders(monkeypatch, tmp_path)
    out = build_output_dir(tmp_path, server)
    victim = tmp_path / "site"
    victim.mkdir()
    (victim / "all-2.html").write_text("mine")
    (out / "report").mkdir()
    (out / "report" / "pages").symlink_to(victim)
    with pytest.raises(SvdflowError) as raised:
        write_report(str(out))
    assert str(raised.value) == (
        f"output folder {out}: a symbolic link is in the way (report/pages is a symbolic link to {victim}, "
        "writing the report's pages in report/pages/); remove the link (svdflow writes nothing through a link "
        "inside its output folder) or choose another output.dir, then run again")
    assert [(p.name, p.read_text()) for p in victim.iterdir()] == [("all-2.html", "mine")]
