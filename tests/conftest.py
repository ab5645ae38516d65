"""Shared fixtures: small real manifests and images written into tmp folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Frames rendered on the CPU depend on the SIMD kernels picked for the machine: the same code writes
# other bytes with ATen's AVX-512 kernels than with its AVX2 ones, and tests compare frames with hashes
# recorded on another machine (tests/fixtures/release-0.1-smoke). So the tests pin every kernel family
# on the render's path to one all x86-64 CI machines have: ATen's and oneDNN's (convolutions) to AVX2,
# MKL's GEMMs to its AVX2 branch (MKL_CBWR=AVX2: it changes the frames on this AMD machine, so MKL
# honours it here; MKL_ENABLE_INSTRUCTIONS is ignored on AMD). Not MKL_CBWR=COMPATIBLE: under it a GEMM's
# rows depend on how many rows it has, which breaks the bit-exact one-token cross-attention shortcut
# (tests/test_cross_attention.py, the bench's no-shortcut case). Each is read when
# torch first runs a kernel of its family, so they are set before anything imports torch (numpy, PIL
# and pytest do not); the processes the tests start (the CLI, Ray and xdist workers, torchrun) inherit
# them. Assigned, not defaulted: a stray shell setting must not change what the fixtures mean.
os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
os.environ["MKL_CBWR"] = "AVX2"

REPO = Path(__file__).resolve().parents[1]
# Subprocess tests run the real CLI with the interpreter running the tests.
SVDFLOW = [sys.executable, "-m", "svdflow"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The contact sheet's card cache keeps its key in the user's cache folder: the tests' keys stay in a
# folder of their own (one per pytest process tree; xdist workers inherit the controller's).
if "SVDFLOW_TEST_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SVDFLOW_TEST_CACHE"] = os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="svdflow-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SVDFLOW_TEST_CACHE"], True)
# Ray clusters the tests start listen on 127.0.0.1 only (Ray otherwise binds the machine's network
# address; read when ray is imported), and send no usage statistics.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

# `make test` runs two workers, a module each at a time (--dist loadfile), in collection order
# (--no-loadscope-reorder, pytest-xdist 3.8: since 3.5 xdist otherwise hands out the modules with the
# most tests first, which put the few-test, long ones, the toy's semantics test and the crash tests,
# at the end, on one worker while the other had run out of work). The longest modules go first, longest
# first, so that neither worker starts one of them after the other has run out of work.
# LONGEST_FIRST, for a run with the slow tests: the order comes from a measured `--durations=0` run
# (per-module totals), longest first, less what the test-speed round measured it took off (fault
# injection's processes -60 % CPU, the tiny bench's threads -50 %, test_hardware -30 %).
LONGEST_FIRST = ("test_crash_safety.py", "test_ray.py", "test_toy.py", "test_fault_injection.py",
                 "test_ray_nodes.py", "test_bench.py", "test_distributed.py", "test_hostile_outputs.py",
                 "test_run.py", "test_clips.py", "test_hardware.py", "test_overlap.py")
# The other modules, and these ones without their slow tests (`make test-fast`), go longest first by
# the seconds their tests took, (not slow, slow): one process, `--durations=0`, per-module totals, at
# load ~2 (2026-12-07). A module not named here took under half a second; the slow tests of
# LONGEST_FIRST's modules were not timed for it (0).
MODULE_SECONDS = {
    "test_overlap.py": (13, 0), "test_masters.py": (12, 9), "test_clips.py": (12, 0), "test_run.py": (11, 0),
    "test_report.py": (9, 7), "test_store_faults.py": (5, 3), "test_models.py": (7, 0), "test_record.py": (6, 15),
    "test_writers.py": (6, 7), "test_qc_run.py": (6, 0), "test_hostile_outputs.py": (5, 0),
    "test_distributed.py": (1, 0), "test_hardware.py": (4, 0), "test_draft.py": (3, 2), "test_provenance.py": (3, 0),
    "test_rerender.py": (3, 12), "test_manifest_errors.py": (3, 0), "test_toy.py": (2, 0), "test_schema.py": (2, 0),
    "test_kernels.py": (2, 8), "test_locations.py": (2, 0), "test_fp8.py": (2, 0), "test_inputs.py": (1, 0),
    "test_bench.py": (1, 0), "test_quality.py": (1, 1), "test_manifest_sources.py": (1, 2), "test_colour.py": (1, 0),
    "test_hostile_inputs.py": (1, 5), "test_storage.py": (0, 7), "test_index.py": (0, 4), "test_qc.py": (0, 3),
    "test_progress.py": (0, 2), "test_cross_attention.py": (0, 2), "test_forked.py": (8, 0)}


@pytest.hookimpl(trylast=True)  # after `-m "not slow"` deselected: the order is the one of what runs
def pytest_collection_modifyitems(config, items):
    with_slow = {item.path.name for item in items if item.get_closest_marker("slow")}

    def rank(item) -> tuple[int, float]:
        name = item.path.name
        if name in with_slow and name in LONGEST_FIRST:
            return 0, LONGEST_FIRST.index(name)
        fast, slow = MODULE_SECONDS.get(name, (0, 0))
        return 1, -(fast + (slow if name in with_slow else 0))

    items.sort(key=rank)  # stable: each module's tests keep their order


def write_image(path: Path, width: int = 96, height: int = 64, seed: int = 0) -> Path:
    """A small deterministic RGB test image with structure (gradient + noise)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    pixels = (0.5 * x + 0.3 * y + 40 * rng.random((height, width, 3))).clip(0, 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    from svdflow.cli import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def video_stream(path) -> bytes:
    """The video stream of an mp4, without its container (and so without its metadata)."""
    import imageio_ffmpeg

    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy",
                           "-f", "h264", "-"], capture_output=True, check=True).stdout


def benchmark_script(name: str):
    """A script of benchmarks/ (`name`.py), loaded as a module: its main() runs in the test's process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_manifest(folder: Path, body: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture(scope="module")
def tiny_pipe():
    """builtin:tiny's pipeline, built once per test module (a module may hang hooks on it)."""
    from svdflow.pipeline.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Torch on one thread in every test process (pytest's, xdist's workers; the processes tests start
    choose their own). Modules that render say so (pytestmark = usefixtures("one_thread")).

    At these toy sizes OpenMP threads only wait on each other, and on a busy 2-core machine, beside the
    other xdist worker, their spinning made renders 4-5x slower and a direct UNet call up to 100x (test_
    hardware's sequential CFG test: 40 s on two threads, 0.4 s on one). svdflow's own CPU renders take
    SVDFLOW_CPU_THREADS (1) anyway. Frames depend on the thread count (reduction order), so every render
    in a process uses the same one; a test of thread settings sets a count of its own (torch_threads).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def noise_image() -> Image.Image:
    """A 64x64 RGB image of seeded noise."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        write_image(tmp_path / "images" / name, seed=i)
    return tmp_path / "images"


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 serving in-memory routes: path -> (status, headers, body)."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        routes: dict[str, tuple[int, dict, bytes]] = {}
        self.routes = routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                status, headers, body = routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server():
    server = LoopbackServer()
    yield server
    server.close()


def free_port() -> int:
    """A port nothing listens on (bound, then closed): connecting to it is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def done_entry(planned, spec, outputs=()):
    """A `done` index entry for a planned job, as a run that wrote `outputs` (and no master) would record it."""
    from svdflow.outputs.entry import IndexEntry, InputRecord, ModelRecord, OutputSettings, RunRecord, Timings
    from svdflow.run.entries import collect_versions

    job, material = planned.job, planned.material
    return IndexEntry(
        id=job.id, item_id=job.item_id, status="done", key=material.key, render_key=material.render_key,
        output_key=material.output_key, key_material=material,
        params=job.params, seed=job.seed, seed_origin=job.seed_origin, sweep=job.sweep,
        input=InputRecord(uri=job.image, sha256=planned.input_sha256, source_size=(64, 64)),
        model=ModelRecord(**spec.model.model_dump(), resolved_revision=None), hardware=None,
        outputs=list(outputs), master=None, encoded_from="render", frames_sha256=None,
        output=OutputSettings(formats=list(spec.formats), crf=spec.crf, prores_profile=spec.prores_profile,
                              masters=spec.masters),
        timings=Timings(), versions=collect_versions(), error=None,
        run=RunRecord(name=spec.name, manifest=str(spec.manifest_path)),
        finished_at="2026-12-01T00:00:00Z", finished_unix=1.0)


@pytest.fixture(scope="session")
def mount_permitted() -> bool:
    """Whether tests may mount a small tmpfs (root or CAP_SYS_ADMIN; SVDFLOW_TEST_NO_MOUNT=1 says no,
    to run the fault tests the way a machine without that does: faults injected instead)."""
    from disks import can_mount

    return os.environ.get("SVDFLOW_TEST_NO_MOUNT") != "1" and can_mount()


@pytest.fixture
def small_disk(tmp_path: Path, mount_permitted: bool):
    """A small file system at tmp_path/disk (tests/disks.py), unmounted after the test."""
    from disks import SmallDisk

    disk = SmallDisk(tmp_path / "disk", mount_permitted)
    yield disk
    disk.close()


def recorded(out: Path) -> dict[str, dict]:
    """Every job the output folder records (index.jsonl, its parts and newer sidecars, each line with
    what its run's line holds), as the JSON of whole entries, by id."""
    from svdflow.outputs.index import RunIndex
    from svdflow.outputs.store import OutputStore

    return {entry.id: entry.model_dump(mode="json") for entry in RunIndex.load(OutputStore(str(out)))}


def index_lines(out: Path) -> dict[str, dict]:
    """The lines of index.jsonl alone (what the last compaction wrote), by id."""
    lines = (out / "index.jsonl").read_text().splitlines() if (out / "index.jsonl").exists() else []
    return {entry["id"]: entry for entry in map(json.loads, lines)}
