"""The `svdflow` command: thin wrappers over the Python API; all exit codes are set in `main`."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

import click

from svdflow import __version__
from svdflow.collector import campaign_held, gc_paused
from svdflow.errors import EXIT_INVALID, EXIT_OK, ManifestError, SvdflowError, describe_bug, exit_code_for
from svdflow.run.interrupts import sigterm_as_interrupt
from svdflow.schemas import SCHEMAS, schema_text, write_schemas
from svdflow.streams import pipe_safe_streams
from svdflow.terminal import printable

# Warnings printed before "... and N more" (errors stop at errors.MAX_SHOWN_PROBLEMS).
MAX_WARNING_LINES = 20


def _holds_campaign(command):
    """A command that holds a campaign's jobs and record while it goes on working (svdflow.collector.
    campaign_held). Not `plan`: it ends once it has decided, before a collection would walk its
    campaign more than once."""
    @functools.wraps(command)
    def holding(*args, **kwargs):
        with campaign_held():
            return command(*args, **kwargs)

    return holding


def _stderr(message: str) -> None:
    click.echo(printable(message), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="svdflow", message="%(prog)s %(version)s")
def cli() -> None:
    """Render Stable Video Diffusion videos from a YAML manifest."""


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout.")
@_holds_campaign
def validate(files: tuple[Path, ...], as_json: bool) -> None:
    """Check manifests against the schema; report every problem with file:line:col."""
    from svdflow.manifest import load_run_spec

    invalid = 0
    for path in files:
        try:
            spec = load_run_spec(path)
        except ManifestError as exc:
            invalid += 1
            _report_validation(path, None, exc, as_json)
        else:
            _report_validation(path, spec, None, as_json)
    if invalid:
        raise SystemExit(EXIT_INVALID)


def _report_validation(path: Path, spec, error: ManifestError | None, as_json: bool) -> None:
    warnings = list(spec.warnings) if spec else []
    problems = error.problems if error else []
    if as_json:
        click.echo(json.dumps({
            "file": str(path), "valid": spec is not None, "jobs": len(spec.jobs) if spec else None,
            "errors": [vars(p) for p in problems], "more_errors": error.more if error else 0,
            "warnings": [vars(w) for w in warnings],
        }))
        return
    if error:
        _print_problems(error)
    _print_warnings(warnings, path)
    if spec is not None:
        _stderr(f"{path}: valid, {len(spec.jobs)} job{'s' * (len(spec.jobs) != 1)}")
    else:
        _stderr(f"{path}: invalid, {error.count:,} problem{'s' * (error.count != 1)}")


def _print_warnings(warnings, path: Path) -> None:
    """The first MAX_WARNING_LINES warnings, then how many more: a table of 100,000 rows that each
    warn must not bury the run's own lines (validate --json lists every one)."""
    for warning in warnings[:MAX_WARNING_LINES]:
        _stderr(f"warning: {warning}")
    if (more := len(warnings) - MAX_WARNING_LINES) > 0:
        _stderr(f"warning: ... and {more:,} more warning{'s' * (more != 1)}; svdflow validate --json {path} "
                "lists them all")


def _print_problems(error: ManifestError) -> None:
    for problem in error.problems:
        _stderr(f"error: {problem}")
    for line in error.more_lines():
        _stderr(line)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON on stdout.")
@click.option("--check", is_flag=True, help="Exit 1 when any job would render or re-encode (for Make).")
@click.option("--only", "only", multiple=True, metavar="ID", help="Plan only this job id (repeatable).")
def plan(file: Path, as_json: bool, check: bool, only: tuple[str, ...]) -> None:
    """Show the jobs a manifest resolves to, and which of them would render."""
    from svdflow.manifest import load_run_spec
    from svdflow.run.planning import plan_run

    spec = load_run_spec(file)
    _print_warnings(spec.warnings, file)
    planned = plan_run(spec, only=only)
    if as_json:
        import orjson

        from svdflow.outputs.storage import spec_job_bytes
        from svdflow.run.forked import write_forked

        # One job per line, compact, by orjson (json.dumps took a fifth of a 100,000-job plan), as the
        # UTF-8 bytes it makes (not decoded and encoded again), a thousand jobs at a time (100,000
        # joined into one string were held three times), shared with forked copies of this process.
        sys.stdout.flush()
        out = click.get_binary_stream("stdout")
        with gc_paused():
            out.write(b"[\n")
            write_forked(planned, lambda p: b"  " + orjson.dumps(p.to_json(spec_job_bytes(spec, p.job))), out, b",\n")
            out.write(b"\n]\n")
        out.flush()
    else:
        from svdflow.views import print_plan  # rich takes 0.1 s to import; --json does not need it

        print_plan(spec, planned)
    if check and any(p.has_work for p in planned):
        raise SystemExit(1)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--only", "only", multiple=True, metavar="ID", help="Render only this job id (repeatable).")
@click.option("--force", is_flag=True, help="Render even jobs that are up to date.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed job.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout; human output on stderr.")
@click.option("--report", "with_report", is_flag=True, help="Also write index.html, a contact sheet of the run.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process (or each process of a torchrun/accelerate launch); ray: Ray actors across "
                   "a cluster, one per GPU (pip install \"svdflow[ray]\").")
@click.option("--address", default=None, metavar="ADDR",
              help="--engine ray: the cluster, auto or HOST:PORT (default: RAY_ADDRESS, else a new local Ray instance).")
@click.option("--cpus-per-worker", type=click.IntRange(min=1), default=None, metavar="N",
              help="--engine ray on CPUs: CPUs per worker (default: SVDFLOW_CPU_THREADS, 1 unless set).")
@_holds_campaign
def run(file: Path, only: tuple[str, ...], force: bool, fail_fast: bool, as_json: bool, with_report: bool,
        engine: str, address: str | None, cpus_per_worker: int | None) -> None:
    """Render every job of a manifest that is not up to date."""
    from svdflow.manifest import load_run_spec
    from svdflow.run.engines.torchrun import World, lonely_launch_hint
    from svdflow.run.executor import RunOptions
    from svdflow.run.progress import make_reporter
    from svdflow.run.runner import run_manifest
    from svdflow.views import print_summary

    world = World.from_env()
    spec = load_run_spec(file)
    if world.is_main:
        _print_warnings(spec.warnings, file)
        if hint := lonely_launch_hint():
            _stderr(f"warning: {hint}")
    reporter = make_reporter(as_json, rank=world.rank, world_size=world.size)
    try:
        result = run_manifest(spec, RunOptions(only=only, force=force, fail_fast=fail_fast), reporter, world,
                              engine=engine, address=address, cpus_per_worker=cpus_per_worker)
    finally:
        reporter.close()
    if not world.is_main:
        # This rank's failed jobs are in rank 0's merged summary and exit code; exiting 1 here as
        # well would only make the launcher tear the group down while rank 0 merges the index.
        raise SystemExit(0)
    print_summary(result)
    if with_report:
        from svdflow.report import write_report

        _stderr(f"report: {write_report(spec.output_dir)}")
    raise SystemExit(result.exit_code)


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--id", "job_id", default=None, help="The job to render again (with an index.json or output folder).")
@click.option("--verify", is_flag=True, help="Exit 1 unless the new frames hash to the recorded ones.")
@click.option("--out", "out_dir", default=None,
              help="Folder for the new files (default: rerendered/ beside the index or the file).")
@click.option("--device", default=None, help="Render on this device instead of the recorded one (e.g. cpu).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def rerender(source: Path, job_id: str | None, verify: bool, out_dir: str | None, device: str | None,
             as_json: bool) -> None:
    """Render one job again, from SOURCE alone (no manifest needed): a file svdflow wrote (its embedded
    provenance), or an index.json or output folder with --id."""
    from svdflow.run.rerender import rerender as rerender_job
    from svdflow.run.rerender import verify_or_raise

    result = rerender_job(str(source), job_id, out_dir=out_dir, device=device)
    if as_json:
        click.echo(json.dumps({"id": result.job_id, "frames_sha256": result.frames_sha256,
                               "recorded_frames_sha256": result.recorded_frames_sha256,
                               "matches": result.matches, "outputs": result.outputs,
                               "differences": result.differences}))
    _stderr(f"{result.job_id}: {'frames match the record' if result.matches else 'frames DIFFER from the record'}"
            f" -> {', '.join(result.outputs)}")
    if verify:
        verify_or_raise(result)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--id", "job_id", default=None, help="With an index.json: the job to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the provenance (a file) or the entry (a .json) on stdout.")
def inspect(file: Path, job_id: str | None, as_json: bool) -> None:
    """Show how a job was made: the provenance a file svdflow wrote carries (video, GIF, WebP, PNG frames),
    or the job's entry in its sidecar <id>.json, or in an index.json with --id."""
    from svdflow.outputs.entry import Provenance
    from svdflow.outputs.records import read_record
    from svdflow.views import entry_text, provenance_text

    record = read_record(str(file), job_id)
    if as_json:
        click.echo(record.model_dump_json(indent=2))
    elif isinstance(record, Provenance):
        click.echo(printable(provenance_text(str(file), record)))
    else:
        click.echo(printable(entry_text(str(file), record)))


@cli.command()
@click.argument("output_dir")
@click.option("--thresholds", default=None, metavar="NAME=VALUE,...",
              help="Judge the scores against these qc thresholds, e.g. min_motion=2,max_flicker=8 (jobs already "
                   "scored are re-judged from their recorded scores).")
@click.option("--force", is_flag=True, help="Score jobs that already have scores again.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job, then a summary, on stdout.")
@_holds_campaign
def qc(output_dir: str, thresholds: str | None, force: bool, as_json: bool) -> None:
    """Score the done jobs of an output folder from their masters (or, without masters, their files) and
    record the scores in their entries; exit 1 when a job could not be scored, 4 when one did not pass."""
    from svdflow.run.rescore import parse_thresholds, score_folder

    limits = parse_thresholds(thresholds) if thresholds is not None else None

    def on_job(job, number: int, total: int) -> None:
        if as_json:
            click.echo(json.dumps(job.to_json()))
        _stderr(f"[{number}/{total}] {job.line()}")

    result = score_folder(output_dir, thresholds=limits, force=force, on_job=on_job)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    _stderr(result.summary())
    raise SystemExit(result.exit_code)


@cli.command()
@click.argument("output_dir")
@_holds_campaign
def report(output_dir: str) -> None:
    """Write index.html beside a run's index.json: a contact sheet of every job, to review by eye."""
    from svdflow.report import write_report

    click.echo(printable(write_report(output_dir)))


@cli.command()
@click.option("--variant", type=click.Choice(["xt", "svd", "tiny"]), default=None,
              help="Architecture, random weights: SVD-XT, SVD or builtin:tiny (default: xt on CUDA, else tiny).")
@click.option("--cases", default=None, metavar="A,B",
              help="Comma-separated cases, run in this order (default: balanced,max-speed,eager-vae,draft,fp8,"
                   "low-vram,no-shortcut,default-attention,decode-one-chunk,seed-offload; also compile-start, "
                   "max-autotune, coordinate-descent, seed-offload-lowmem, low-vram-batched-cfg, max-speed-fullgraph).")
@click.option("--videos", type=click.IntRange(min=1), default=None, help="Timed videos per case (default 2; a compiled case's first one compiles).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="num_inference_steps.")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="num_frames.")
@click.option("--height", type=click.IntRange(min=64), default=None, help="Height in pixels.")
@click.option("--width", type=click.IntRange(min=64), default=None, help="Width in pixels.")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:N.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the results here (rewritten after every case).")
@click.option("--no-latent-check", is_flag=True, help="Skip comparing final latents with eager fp16.")
@click.option("--kernels", is_flag=True, help="Add where the time goes (CUDA kernels; CPU operators on a CPU) to balanced and max-speed.")
@click.option("--overlap", is_flag=True, help="Add three videos with overlap_decode to balanced and max-speed.")
@click.option("--deadline", type=float, default=None, metavar="SECONDS", help="Skip cases that would start later.")
def bench(variant, cases, videos, steps, frames, height, width, device, json_path, no_latent_check, kernels,
          overlap, deadline) -> None:
    """Time svdflow's settings and diffusers' offload recipe on SVD with random weights (no download);
    measurements only (the project's targets: benchmarks/gpu_targets.py)."""
    from svdflow.bench import format_table, run_bench

    result = run_bench(variant, [c.strip() for c in cases.split(",") if c.strip()] if cases else None,
                       videos=videos, steps=steps, frames=frames, height=height, width=width, device=device,
                       check_latents=not no_latent_check, json_path=json_path, kernels=kernels,
                       overlap=overlap, deadline_s=deadline, log=_stderr)
    click.echo(format_table(result))


@cli.command()
@click.argument("which", type=click.Choice(list(SCHEMAS)), default="manifest")
@click.option("--write", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write every kind's schema into this folder as <kind>.schema.json (what `make schemas` does).")
def schema(which: str, folder: Path | None) -> None:
    """Print a JSON Schema: manifest (default), index (a line of index.jsonl), run (a line of runs.jsonl),
    sidecar (a job's <id>.json), or provenance (embedded in every file)."""
    if folder is not None:
        for path in write_schemas(str(folder)):
            click.echo(path)
        return
    click.echo(schema_text(which), nl=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command and map every error to its exit code in this one place."""
    # Ctrl-C and SIGTERM stop every command the same way, from its first line (exit 130).
    with pipe_safe_streams(), sigterm_as_interrupt():
        code = _run_cli(argv)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _saved_traceback(exc: BaseException) -> str:
    """The bug's traceback, kept in a file for the report (the terminal gets one line): ' and FILE'."""
    try:
        fd, path = tempfile.mkstemp(prefix="svdflow-bug-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return ""
    return f" and {path}"


def _run_cli(argv: list[str] | None) -> int | None:
    try:
        code = cli.main(args=argv, prog_name="svdflow", standalone_mode=False)
    except click.exceptions.Abort:
        _stderr("interrupted")
        code = 130
    except click.ClickException as exc:
        exc.show()
        code = EXIT_INVALID
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_INVALID
    except ManifestError as exc:
        _print_problems(exc)
        code = exc.exit_code
    except SvdflowError as exc:
        _stderr(f"error: {exc}")
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        _stderr("interrupted")
        code = exit_code_for(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: one line that can be reported, not a traceback
        _stderr(f"error: svdflow failed unexpectedly: {describe_bug(exc)} (a bug in svdflow; please report it "
                f"with the command that ran{_saved_traceback(exc)})")
        code = exit_code_for(exc)
    return code
