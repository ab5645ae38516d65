"""`svdflow rerender`: one video again from its index entry alone, no manifest needed."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from svdflow.errors import EnvironmentProblem, InputError, UsageError, VerifyMismatch
from svdflow.inputs import decode_image, fetch_bytes, resize_image
from svdflow.manifest.resolve import Job
from svdflow.outputs.store import OutputStore
from svdflow.outputs.writers import write_outputs
from svdflow.pipeline.profiles import DeviceFacts, ResolvedHardware, apply_hardware, torch_dtype
from svdflow.run.keys import content_key, frames_sha256

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


def load_entry(index_path: str, job_id: str) -> dict[str, Any]:
    """The entry of `job_id` from an index.json (or an output folder holding one)."""
    folder, name = (index_path, "index.json") if os.path.isdir(index_path) else os.path.split(index_path)
    store = OutputStore(folder or ".")
    document = store.read_json(name)
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        raise UsageError(f"{index_path}: not an svdflow index.json; pass the index.json of a run "
                         "(or its output folder)")
    entries = {e.get("id"): e for e in document["jobs"] if isinstance(e, dict)}
    sidecar = store.read_json(f"{job_id}.json")
    if isinstance(sidecar, dict) and sidecar.get("finished_unix", 0) > entries.get(job_id, {}).get("finished_unix", 0):
        entries[job_id] = sidecar
    if job_id not in entries:
        known = ", ".join(sorted(str(k) for k in entries)[:10])
        raise UsageError(f"{index_path}: no job '{job_id}' in this index; known ids: {known}")
    entry = entries[job_id]
    if entry.get("status") != "done":
        raise UsageError(f"{index_path}: job '{job_id}' has status {entry.get('status')!r}, not done; only a "
                         "finished job can be rendered again (run the manifest to retry it)")
    return entry


def rerender(index_path: str, job_id: str, *, out_dir: str | None = None, device: str | None = None,
             write: bool = True) -> RerenderResult:
    """Render the job recorded in `index_path` again and compare its frames with the record."""
    from svdflow.pipeline.models import ModelSpec, describe_source, load_pipeline
    from svdflow.pipeline.render import render_frames

    entry = load_entry(index_path, job_id)
    job = Job(entry["id"], entry["item_id"], entry["input"]["uri"], dict(entry["params"]),
              entry.get("seed_origin", "item"), dict(entry.get("sweep") or {}))
    tampered = _tampered_fields(entry)
    image = _input_image(entry, job)
    hardware = _hardware(entry, device)
    model = entry["model"]
    # The exact commit that was loaded, where known: a branch name may have moved since.
    revision = model.get("revision")
    if describe_source(model["source"]) == "hub" and model.get("resolved_revision"):
        revision = model["resolved_revision"]
    spec = ModelSpec(model["source"], revision, model.get("variant"))
    manifest = (entry.get("run") or {}).get("manifest")
    pipe = load_pipeline(spec, torch_dtype=torch_dtype(hardware.dtype),
                         manifest_dir=os.path.dirname(manifest) if manifest else None)
    pipe.set_progress_bar_config(disable=True)
    apply_hardware(pipe, hardware)
    frames = render_frames(pipe, image, job.params, decode_chunk_size=hardware.decode_chunk_size,
                           cpu_threads=hardware.cpu_threads)
    result = RerenderResult(job.id, frames_sha256(frames), entry.get("frames_sha256"), tampered=tampered)
    if write:
        folder = out_dir or os.path.join(os.path.dirname(os.path.abspath(index_path))
                                         if not os.path.isdir(index_path) else index_path, RERENDER_DIR)
        output = entry.get("output") or (entry.get("key_material") or {}).get("output") or {"formats": ["mp4"]}
        written = write_outputs(frames, folder, job.id, output["formats"], playback_fps=job.params["playback_fps"],
                                crf=output.get("crf", 18), comment=f"svdflow key={entry.get('key')}")
        result.outputs = [w.path for w in written]
    if not result.matches:
        result.differences = tampered + _environment_differences(entry, hardware)
    return result


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


def _input_image(entry: dict[str, Any], job: Job):
    data = fetch_bytes(job.image)
    digest = hashlib.sha256(data).hexdigest()
    recorded = entry["input"].get("sha256")
    if recorded and digest != recorded:
        raise InputError(f"{job.image}: the input changed since it was rendered (sha256 {digest[:12]}, recorded "
                         f"{recorded[:12]}); restore the original file to render this job again")
    p = job.params
    return resize_image(decode_image(data, job.image), p["width"], p["height"], p["resize"])


def _hardware(entry: dict[str, Any], device: str | None) -> ResolvedHardware:
    recorded = dict(entry.get("hardware") or {})
    recorded.pop("oom_retries", None)
    fields = {k: recorded[k] for k in ResolvedHardware.__dataclass_fields__ if k in recorded}
    if not fields:
        fields = {"profile": "cpu", "device": "cpu", "dtype": "float32", "offload": "none",
                  "forward_chunking": False, "decode_chunk_size": None, "compile": False}
    if device:
        fields["device"] = device
    hardware = ResolvedHardware(**fields)
    facts = DeviceFacts.probe()
    if hardware.device.startswith("cuda") and int(hardware.device.partition(":")[2] or 0) >= facts.cuda_count:
        raise EnvironmentProblem(f"job '{entry['id']}' was rendered on {hardware.device}, which this machine does "
                                 "not have; pass --device cpu (frames may then differ) or run it on a GPU machine")
    if hardware.device == "cpu" and hardware.offload != "none":
        hardware = ResolvedHardware(**{**fields, "offload": "none"})
    return hardware


def _tampered_fields(entry: dict[str, Any]) -> list[str]:
    """Fields whose recorded value no longer matches the entry's own content key."""
    material = entry.get("key_material")
    if not material or content_key(material) != entry.get("key"):
        return ["the entry's key_material does not hash to its key (edited?)"] if material else []
    out = []
    for name, value in entry["params"].items():
        if material["params"].get(name) != value:
            out.append(f"params.{name} is {value!r} but was rendered with {material['params'].get(name)!r}")
    return out


def _environment_differences(entry: dict[str, Any], hardware: ResolvedHardware) -> list[str]:
    from svdflow.run.executor import collect_versions

    out = []
    recorded_hw = entry.get("hardware") or {}
    for name in ("device", "dtype"):
        if recorded_hw.get(name) not in (None, getattr(hardware, name)):
            out.append(f"{name} {recorded_hw.get(name)} -> {getattr(hardware, name)}")
    now = collect_versions()
    for name, value in (entry.get("versions") or {}).items():
        if name in now and now[name] != value and name != "platform":
            out.append(f"{name} {value} -> {now[name]}")
    return out
