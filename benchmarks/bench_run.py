"""How much of a run is spent outside the pipeline call, and does the render loop ever wait on I/O?

Renders a 20-job builtin:tiny manifest on the CPU (half the inputs served over loopback HTTP with
an artificial 150 ms latency, so prefetching has something to hide) and prints, per job and in
total: fetch+decode+resize time (background threads), the time the render loop waited for its
input, pipeline time, encode+index time (background writer), and the wall-clock overhead of the
whole run beyond the pipeline calls.

    .venv/bin/python benchmarks/bench_run.py [--jobs 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_image  # noqa: E402

from svdflow.api import recorded_entries, run_manifest  # noqa: E402

LATENCY_S = 0.15


def serve(folder: Path) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = (folder / self.path.lstrip("/")).read_bytes()
            time.sleep(LATENCY_S)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = serve(folder)
        port = server.server_address[1]
        items = []
        for i in range(args.jobs):
            write_image(folder / f"in{i}.png", width=448, height=256, seed=i)
            image = f"http://127.0.0.1:{port}/in{i}.png" if i % 2 else f"in{i}.png"
            items.append(f"  - {{id: job{i:02d}, image: '{image}'}}")
        manifest = folder / "bench.yaml"
        manifest.write_text("\n".join([
            "svdflow: 1", "name: bench", "model: {source: 'builtin:tiny'}", "hardware: {profile: cpu}",
            "output: {dir: out, formats: [mp4]}",
            "defaults: {num_frames: 8, num_inference_steps: 4, width: 112, height: 64}", "items:", *items]) + "\n")

        started = time.perf_counter()
        result = run_manifest(manifest)
        wall = time.perf_counter() - started
        server.shutdown()
        entries = [e.model_dump(mode="json") for e in recorded_entries(folder / "out")]

    assert result.count("done") == args.jobs, result.errors
    timings = [e["timings"] for e in entries]
    render = [t["render_s"] for t in timings]
    first_render = render[0]  # includes loading the pipeline
    rows = {name: [t[name] for t in timings] for name in ("fetch_s", "input_wait_s", "render_s", "encode_s")}
    print(f"{args.jobs} jobs, builtin:tiny 8x112x64, 4 steps; half the inputs over HTTP with {LATENCY_S*1000:.0f} ms latency")
    print(f"{'per job (s)':<28}{'median':>10}{'max':>10}{'total':>10}")
    labels = {"fetch_s": "fetch+decode+resize (bg)", "input_wait_s": "render loop waited on input",
              "render_s": "pipeline call", "encode_s": "encode+write (bg)"}
    for name, values in rows.items():
        print(f"{labels[name]:<28}{statistics.median(values):>10.3f}{max(values):>10.3f}{sum(values):>10.3f}")
    waits_after_first = sum(rows["input_wait_s"][1:])
    overhead = wall - sum(render)
    print(f"wall clock {wall:.2f} s; pipeline calls {sum(render):.2f} s (first, with model load: {first_render:.2f} s)")
    print(f"outside the pipeline: {overhead:.2f} s in all, {overhead / args.jobs:.3f} s per job; "
          f"render loop waited on inputs {waits_after_first:.3f} s after the first job")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"jobs": args.jobs, "wall_s": wall, "timings": timings,
                                                    "overhead_s": overhead}, indent=2))


if __name__ == "__main__":
    main()
