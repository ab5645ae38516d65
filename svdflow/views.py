"""Human-readable tables for plan and run summaries (rich; plain text when not a terminal)."""

from __future__ import annotations

import os
from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from svdflow.manifest.resolve import RunSpec
from svdflow.outputs.clip import clip_shape
from svdflow.outputs.masters import MASTERS_DIR
from svdflow.outputs.storage import MEASURED_CONTENT, content_of, job_bytes, spec_job_bytes
from svdflow.run.planning import masters_note
from svdflow.terminal import printable


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


# Rich lays out a table by measuring every cell: fine for a screenful, ~13 s for 10,000 jobs.
# Past this many rows, and whenever the output is not a terminal (a log, a pipe to grep: rich
# would squeeze the table into 80 columns and cut every cell), the plan is aligned plain text.
RICH_TABLE_MAX_ROWS = 500
# frames: num_frames (of each segment); clip and duration: the written files' frames and seconds
# (after segments, loop and interpolate: svdflow.outputs.clip).
PLAN_COLUMNS = ("id", "image", "seed", "size", "frames", "clip", "duration", "steps", "fps", "motion", "aug", "from",
                "status")
# How the plan's legend names each origin of a value (Job.origins), in the order it lists them.
ORIGIN_WORDS = {"item": "items", "table": "table rows", "sweep": "sweeps", "defaults": "defaults",
                "model": "the model", "derived": "derived"}


def _plan_row(p) -> tuple[str, ...]:
    params = p.job.params
    clip = clip_shape(params)
    status = p.status + (f" ({p.reason})" if p.reason and p.status != "new" else "")
    frames = f"{params.segments}x{params.num_frames}" if params.segments > 1 else str(params.num_frames)
    return (p.job.id, _short(printable(p.job.image)), str(p.job.seed), f"{params.width}x{params.height}",
            frames, str(clip.frames), f"{clip.duration_s:.2f}s", str(params.num_inference_steps), str(params.fps),
            str(params.motion_bucket_id), f"{params.noise_aug_strength:g}", _short(printable(p.job.defined_at), 32),
            printable(status))


def origin_legend(spec: RunSpec, planned) -> list[str]:
    """Where the plan's values came from, per origin: which parameters, for how many of the jobs."""
    total = len(planned)
    shapes = Counter(id(p.job.origins) for p in planned)  # jobs alike share one mapping
    by_id = {id(p.job.origins): p.job.origins for p in planned}
    counts: dict[str, Counter] = {origin: Counter() for origin in ORIGIN_WORDS}
    for shape, jobs in shapes.items():
        for parameter, origin in by_id[shape].items():
            if origin in counts:
                counts[origin][parameter] += jobs
    width = max(len(words) for words in ORIGIN_WORDS.values()) + 1
    lines = ["where values came from (the rest: svdflow's defaults):"]
    for origin, words in ORIGIN_WORDS.items():
        if not counts[origin]:
            continue
        model = spec.model_defaults if origin == "model" else None
        listed = ", ".join(
            f"{name}{f' {model.values[name]}' if model and name in model.values else ''} "
            f"({'all' if n == total else f'{n} of {total}'})" for name, n in counts[origin].items())
        if model is not None:
            listed += f": {model.source}'s {model.basis}"
        elif origin == "derived":
            listed += ": from (base seed, item id)"
        lines.append(printable(f"  {words + ':':<{width}} {listed}"))
    return lines if len(lines) > 1 else []


def print_plan(spec: RunSpec, planned, console: Console | None = None) -> None:
    console = console or _console()
    title = printable(f"{spec.name}: {len(planned)} jobs -> {spec.output_dir}")
    rows = [_plan_row(p) for p in planned]
    if console.is_terminal and len(rows) <= RICH_TABLE_MAX_ROWS:
        # Text, not str: rich reads a str cell as markup, and "[/]" in a file name would stop the plan.
        table = Table(title=Text(title), title_justify="left")
        for column in PLAN_COLUMNS:
            table.add_column(column, no_wrap=column in ("id", "seed", "size"))
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
    else:
        widths = [max(len(row[i]) for row in [PLAN_COLUMNS, *rows]) for i in range(len(PLAN_COLUMNS) - 1)]
        lines = [title] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
                           for row in [PLAN_COLUMNS, *rows]]
        console.file.write("\n".join(lines) + "\n")
    for line in origin_legend(spec, planned):
        console.file.write(line + "\n")
    counts = Counter("render" if p.would_render else "re-encode" if p.would_reencode else
                     "re-judge" if p.would_rejudge else "up to date" for p in planned)
    rejudge = f", {counts['re-judge']} to re-judge (qc changed; nothing renders)" if counts["re-judge"] else ""
    console.print(f"{counts['render']} to render, {counts['re-encode']} to re-encode, {counts['up to date']} "
                  f"up to date{rejudge}")
    for line in storage_lines(spec, planned):
        console.file.write(line + "\n")
    if (note := masters_note(spec, planned)) is not None:
        console.file.write(printable(note) + "\n")


def storage_lines(spec: RunSpec, planned) -> list[str]:
    """What the plan will write, in bytes, estimated from each format's measured bytes per frame
    (svdflow.outputs.storage): this run's videos and masters, and the finished campaign's."""
    content = content_of(spec.model.source)
    videos: Counter = Counter()
    masters = this_run = campaign = 0
    for p in planned:
        files = spec_job_bytes(spec, p.job)
        campaign += files.total
        renders = p.would_render and p.status != "input error"
        this_run += files.written(renders, p.would_reencode)
        if renders or p.would_reencode:
            videos.update(files.videos)
        if renders:
            masters += files.master
    parts = ", ".join(f"{fmt} ~{human_bytes(videos[fmt])}" for fmt in spec.formats)
    lines = [f"storage (estimated from {MEASURED_CONTENT[content]}): this run writes ~{human_bytes(this_run)}: "
             f"videos ~{human_bytes(sum(videos.values()))} ({parts})"
             + (f", masters ~{human_bytes(masters)} in {MASTERS_DIR}/" if spec.masters else "")
             + f"; the finished campaign holds ~{human_bytes(campaign)}"]
    if content == "smooth" and campaign:
        noisy = sum(job_bytes(p.job.params, spec.formats, crf=spec.crf, prores_profile=spec.prores_profile,
                              masters=spec.masters, content="noise").total for p in planned)
        lines.append(f"  busy, detailed footage makes more; frames of pure noise, the most any can take, "
                     f"~{human_bytes(noisy)}")
    return lines


def _short(uri: str, width: int = 48) -> str:
    return uri if len(uri) <= width else "…" + uri[-(width - 1):]


def print_summary(result, console: Console | None = None) -> None:
    """The end-of-run table on stderr: what rendered, what was skipped, what failed and why."""
    console = console or _console(stderr=True)
    summary = result.summary()
    _print_jobs(console, "failed", "failed jobs", "error", result.errors)
    if result.orphans:
        console.print(printable(f"orphaned (no longer in the manifest, files kept): {', '.join(result.orphans)}"),
                      markup=False)
    _print_jobs(console, "did not pass qc", "did not pass qc", "thresholds failed", result.qc_failed)
    # The qc counts only where qc is in use: a run without it keeps the line it always had.
    qc = (f", {summary['qc_failed']} did not pass qc" if summary["qc_failed"] or any(job.qc for job in result.spec.jobs)
          else "") + (f", {summary['re_judged']} re-judged" if summary["re_judged"] else "")
    console.print(printable(f"{summary['rendered']} rendered, {summary['re_encoded']} re-encoded, {summary['up_to_date']} "
                            f"up to date, {summary['failed']} failed{qc} in {summary['seconds']:.1f}s -> "
                            f"{result.spec.output_dir}"), markup=False)
    if result.spec.masters or result.masters_bytes:
        console.print(f"masters: {human_bytes(result.masters_bytes)} in {MASTERS_DIR}/")


def _print_jobs(console: Console, label: str, title: str, column: str, messages: dict[str, str]) -> None:
    """Jobs with a message each: a table on a terminal, else whole messages one per line (for logs and grep)."""
    if messages and not console.is_terminal:
        console.file.write("".join(printable(f"{label}: {job_id}: {message}") + "\n"
                                   for job_id, message in messages.items()))
    elif messages:
        table = Table(title=title, title_justify="left")
        table.add_column("id", no_wrap=True)
        table.add_column(column)
        for job_id, message in messages.items():
            table.add_row(Text(printable(job_id)), Text(printable(message)))
        console.print(table)


def human_bytes(count: int) -> str:
    """1536 -> "1.5 KiB"."""
    if count < 1024:
        return f"{count} bytes"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def provenance_text(path: str, p) -> str:
    """What `svdflow inspect FILE` prints: the provenance a file carries, one fact per line."""
    return "\n".join([f"{path}: job {p.id} of {p.run.name}, svdflow {p.versions.get('svdflow', '?')}",
                      *_provenance_lines(p), f"render again: svdflow rerender {path} --verify"])


def entry_text(path: str, entry) -> str:
    """What `svdflow inspect` prints for a job's entry (a sidecar, or an index.json with --id): its
    provenance, then what writing its files recorded, or why it failed."""
    head = f"{path}: job {entry.id} of {entry.run.name}, {entry.status}, svdflow {entry.versions.get('svdflow', '?')}"
    if entry.status != "done":
        error = entry.error
        lines = [head, f"  item        {entry.item_id}, seed {entry.seed} ({entry.seed_origin})",
                 f"  input       {entry.input.uri}",
                 f"  error       {error.type} at {error.stage}: {error.message}" if error else "  error       none",
                 f"  finished    {entry.finished_at}"]
        return "\n".join(lines)
    from svdflow.outputs.entry import Provenance

    t = entry.timings
    stages = [(name, getattr(t, f"{name}_s")) for name in ("fetch", "render", "encode", "total")]
    lines = [head, *_provenance_lines(Provenance.of(entry)),
             "  files       " + ", ".join(f"{o.file} ({human_bytes(o.bytes)})" for o in entry.outputs),
             f"  master      {entry.master.file if entry.master else 'none'}; encoded from {entry.encoded_from}",
             "  timings     " + ", ".join(f"{name} {value:.2f} s" for name, value in stages if value is not None),
             f"  finished    {entry.finished_at}",
             f"render again: svdflow rerender {os.path.dirname(path) or '.'} --id {entry.id} --verify"]
    return "\n".join(lines)


def _provenance_lines(p) -> list[str]:
    model = p.model
    hardware = p.hardware
    output = p.output
    settings = [", ".join(output.formats), f"crf {output.crf}"]
    if "prores" in output.formats:
        settings.append(f"prores_profile {output.prores_profile}")
    settings.append(f"masters {'on' if output.masters else 'off'}")
    lines = [
        f"  item        {p.item_id}, seed {p.seed} ({p.seed_origin})",
        f"  input       {p.input.uri}",
        f"              sha256 {p.input.sha256}",
        f"  model       {model.source}, revision {model.revision or 'none'}, variant {model.variant or 'none'}, "
        f"loaded {model.resolved_revision or 'from a local folder'}",
        "  parameters  " + ", ".join(f"{name} {value}" for name, value in p.params.model_dump().items()),
    ]
    if p.sweep:
        lines.append("  sweep       " + ", ".join(f"{name} {value}" for name, value in p.sweep.items()))
    if hardware is not None:
        lines.append(f"  hardware    {hardware.device}, {hardware.dtype}, profile {hardware.profile}, "
                     f"offload {hardware.offload}, compile {'on' if hardware.compile else 'off'}")
    lines += [
        "  output      " + "; ".join(settings),
        f"  frames      sha256 {p.frames_sha256}",
        f"  keys        content {p.key}",
        f"              render  {p.render_key}",
        f"              output  {p.output_key}",
        "  versions    " + ", ".join(f"{name} {value}" for name, value in p.versions.items() if name != "platform"),
        f"  manifest    {p.run.manifest}",
    ]
    return lines
