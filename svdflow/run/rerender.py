"""`svdflow rerender`: one video again from its entry, no manifest needed: from an output folder's
record (the folder, or its index.jsonl: the entry's line with its run's line of runs.jsonl), from the
job's sidecar `<id>.json` alone (a whole entry), or from one of its files alone (the provenance every
file carries)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from svdflow.errors import DeviceError, EnvironmentProblem, InputError, UsageError, VerifyMismatch
from svdflow.hardware import ResolvedHardware, fp8_refusal
from svdflow.inputs import decode_image, fetch_bytes, resize_image
from svdflow.outputs.entry import Provenance
from svdflow.outputs.ownership import names_in_the_way
from svdflow.outputs.post import post_process
from svdflow.outputs.provenance import read_provenance
from svdflow.outputs.records import index_entry, read_record
from svdflow.outputs.store import OutputStore
from svdflow.outputs.writers import output_path, write_outputs
from svdflow.quality.rerolls import reroll_seed
from svdflow.run.entries import collect_versions
from svdflow.run.keys import frames_sha256

RERENDER_DIR = "rerendered"


@dataclass
class RerenderResult:
    job_id: str
    frames_sha256: str
    recorded_frames_sha256: str | None
    outputs: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    tampered: list[str] = field(default_factory=list)  # entry fields that disagree with its own key

    @property
    def matches(self) -> bool:
        return self.frames_sha256 == self.recorded_frames_sha256


def is_index(source: str) -> bool:
    """An output folder, its index.jsonl or a .json (a sidecar, or a format 1/2 index.json), rather than
    a file svdflow wrote (or a folder of PNG frames)."""
    if source.endswith((".json", ".jsonl")):
        return True
    return os.path.isdir(source) and not any(name.endswith(".png") for name in os.listdir(source))


def load_source(source: str, job_id: str | None) -> Provenance:
    """What to render again: job `job_id` of an output folder's record, a sidecar's entry, or the job a
    file was made by."""
    if source.endswith((".json", ".jsonl")):
        return Provenance.of(_finished(read_record(source, job_id), source))
    if is_index(source):
        if job_id is None:
            raise UsageError(f"{source}: an index holds many jobs; pass --id ID to say which (or pass one of "
                             "the job's files instead)")
        return Provenance.of(load_entry(source, job_id))
    provenance = read_provenance(source)
    if job_id is not None and job_id != provenance.id:
        raise UsageError(f"{source}: made by job '{provenance.id}', not '{job_id}'; drop --id or pass that job's file")
    return provenance


def load_entry(index_path: str, job_id: str):
    """The entry of `job_id` from an output folder's record (the folder, or its index.jsonl), with newer
    sidecars merged in as a run would; a finished one."""
    return _finished(index_entry(index_path, job_id), index_path)


def _finished(entry, source: str):
    if entry.status != "done":
        raise UsageError(f"{source}: job '{entry.id}' has status {entry.status!r}, not done; only a "
                         "finished job can be rendered again (run the manifest to retry it)")
    return entry


def rerender(source: str, job_id: str | None = None, *, out_dir: str | None = None, device: str | None = None,
             write: bool = True) -> RerenderResult:
    """Render a job again and compare its frames with the record: job `job_id` of the index.json (or
    output folder) `source`, or, when `source` is a file svdflow wrote, the job it carries.

    The new files go to `out_dir` (default: `rerendered/` beside the index or the file) and carry
    the recorded provenance: when the frames match, they are the very files of the record.
    """
    from svdflow.pipeline.apply import apply_hardware
    from svdflow.pipeline.device import torch_dtype
    from svdflow.pipeline.models import ModelSpec, describe_source, load_pipeline
    from svdflow.pipeline.process_state import ProcessChanges
    from svdflow.pipeline.render import render_frames
    from svdflow.pipeline.segments import render_segments

    entry = load_source(source, job_id)
    folder = out_dir or os.path.join(os.path.dirname(os.path.abspath(source))
                                     if not os.path.isdir(source) else source, RERENDER_DIR)
    if write:  # before rendering: files of the job's names that svdflow did not write stay untouched
        _refuse_foreign(folder, entry)
    tampered = _tampered_fields(entry)
    image = _input_image(entry)
    hardware = _hardware(entry, device)
    model = entry.model
    # The exact commit that was loaded, where known: a branch name may have moved since.
    revision = model.revision
    if describe_source(model.source) == "hub" and model.resolved_revision:
        revision = model.resolved_revision
    spec = ModelSpec(model.source, revision, model.variant)
    pipe = load_pipeline(spec, torch_dtype=torch_dtype(hardware.dtype),
                         manifest_dir=os.path.dirname(entry.run.manifest))
    changes = ProcessChanges()
    try:
        apply_hardware(pipe, hardware, changes)
        frames, _ = render_segments(
            lambda params, segment_image: render_frames(pipe, segment_image, params, cpu_threads=hardware.cpu_threads,
                                                        decode_chunk_size=hardware.decode_chunk_size),
            entry.params, image)
    finally:
        changes.restore()
    result = RerenderResult(entry.id, frames_sha256(frames), entry.frames_sha256, tampered=tampered)
    if write:
        written = write_outputs(post_process(frames, entry.params), folder, entry.id, entry.output.formats,
                                playback_fps=entry.params.playback_fps,
                                crf=entry.output.crf, prores_profile=entry.output.prores_profile,
                                provenance=entry.to_text())
        result.outputs = [w.path for w in written]
    if not result.matches:
        result.differences = tampered + _environment_differences(entry, hardware)
    return result


def _refuse_foreign(folder: str, entry) -> None:
    names = [os.path.basename(output_path(folder, entry.id, fmt)) for fmt in entry.output.formats]
    in_the_way = names_in_the_way(OutputStore(folder), entry.id, names, owned=())
    if in_the_way:
        raise UsageError(f"{folder}: {', '.join(in_the_way)} would be replaced, but svdflow did not write "
                         f"{'it' if len(in_the_way) == 1 else 'them'} for job '{entry.id}'; move "
                         f"{'it' if len(in_the_way) == 1 else 'them'} away or pass another --out")


def verify_or_raise(result: RerenderResult) -> None:
    if result.matches and result.tampered:
        # Some edits (playback_fps, crf) leave the frames alone: the record is still wrong.
        raise VerifyMismatch(f"job '{result.job_id}': frames match, but the entry was edited after rendering: "
                             f"{'; '.join(result.tampered)}; restore the entry or render the job again")
    if result.matches:
        return
    why = "; ".join(result.differences) or "nothing recorded differs (non-deterministic kernels?)"
    raise VerifyMismatch(f"job '{result.job_id}': frames differ from the record (sha256 {result.frames_sha256[:12]} "
                         f"vs recorded {str(result.recorded_frames_sha256)[:12]}); differences: {why}")


def _input_image(entry: Provenance):
    uri = entry.input.uri
    data = fetch_bytes(uri)
    digest = hashlib.sha256(data).hexdigest()
    recorded = entry.input.sha256
    if recorded and digest != recorded:
        raise InputError(f"{uri}: the input changed since it was rendered (sha256 {digest[:12]}, recorded "
                         f"{recorded[:12]}); restore the original file to render this job again")
    p = entry.params
    return resize_image(decode_image(data, uri), p.width, p.height, p.resize)


def _hardware(entry: Provenance, device: str | None) -> ResolvedHardware:
    from svdflow.pipeline.device import probe

    recorded = entry.hardware
    if recorded is None:
        hardware = ResolvedHardware(profile="cpu", device="cpu", dtype="float32", offload="none",
                                    forward_chunking=False, decode_chunk_size=None, compile=False)
    else:
        hardware = ResolvedHardware(**recorded.model_dump(exclude={"oom_retries"}))
    if device:
        hardware = hardware.replace(device=device)
    facts = probe()
    if hardware.device.startswith("cuda") and int(hardware.device.partition(":")[2] or 0) >= facts.cuda_count:
        raise EnvironmentProblem(f"job '{entry.id}' was rendered on {hardware.device}, which this machine does "
                                 "not have; pass --device cpu (frames may then differ) or run it on a GPU machine")
    if hardware.device == "cpu" and hardware.offload != "none":
        hardware = hardware.replace(offload="none")
    if hardware.device == "cpu" and hardware.compile_vae:
        hardware = hardware.replace(compile_vae=False)  # compiled only on CUDA, as a run decides
    if hardware.fp8 and (refusal := fp8_refusal(hardware.device, hardware.dtype, facts)):
        # FP8 is in the key: rendering without it would not be this job.
        raise DeviceError(f"job '{entry.id}' was rendered with {refusal}")
    return hardware


def _tampered_fields(entry: Provenance) -> list[str]:
    """Fields whose recorded value no longer matches the entry's own keys."""
    material = entry.key_material
    if material.key != entry.key:
        return ["the entry's key_material does not hash to its key (edited?)"]
    fields = type(entry.params).model_fields
    made_with = {name: field.default for name, field in fields.items()}  # a parameter not keyed was at its default
    made_with.update({**material.render.params, **material.output.params})
    if entry.quality is not None and entry.quality.kept:  # a re-roll: the kept attempt's seed, not the job's
        made_with["seed"] = reroll_seed(made_with["seed"], entry.quality.kept)
    out = [f"params.{name} is {value!r} but was rendered with {made_with.get(name)!r}"
           for name, value in entry.params.model_dump().items() if made_with.get(name) != value]
    if material.output.crf is not None and entry.output.crf != material.output.crf:
        out.append(f"output.crf is {entry.output.crf} but was encoded with {material.output.crf}")
    return out


def _environment_differences(entry: Provenance, hardware: ResolvedHardware) -> list[str]:
    out = []
    recorded_hw = entry.hardware
    for name in ("device", "dtype"):
        recorded_value = getattr(recorded_hw, name) if recorded_hw else None
        if recorded_value not in (None, getattr(hardware, name)):
            out.append(f"{name} {recorded_value} -> {getattr(hardware, name)}")
    now = collect_versions()
    for name, value in entry.versions.items():
        if name in now and now[name] != value and name != "platform":
            out.append(f"{name} {value} -> {now[name]}")
    return out
