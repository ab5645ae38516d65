"""The one pipeline of a run: loaded on first use, configured by the hardware profile, and
stepped down the memory ladder when a job runs out of GPU memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from svdflow.errors import RenderError
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.pipeline.profiles import (
    DeviceFacts,
    ResolvedHardware,
    apply_hardware,
    resolve_hardware,
    torch_dtype,
)
from svdflow.progress import Reporter


class PipelineSession:
    def __init__(self, spec: RunSpec, jobs: Sequence[Job], reporter: Reporter | None = None,
                 facts: DeviceFacts | None = None):
        self.spec = spec
        self.reporter = reporter or Reporter()
        self._planned_steps = sum(job.params["num_inference_steps"] for job in jobs)
        self._facts = facts
        self.hardware: ResolvedHardware | None = None
        self.pipe = None
        self.resolved_revision: str | None = None
        self.oom_retries: list[dict[str, Any]] = []

    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    def resolve(self) -> ResolvedHardware:
        if self.hardware is None:
            facts = self._facts or DeviceFacts.probe()
            self.hardware = resolve_hardware(self.spec.hardware, facts, planned_unet_steps=self._planned_steps)
            if self.spec.hardware.profile == "auto":
                self.reporter.note(f"hardware: auto chose profile {self.hardware.profile} ({self.hardware.reason})")
        return self.hardware

    def load(self) -> None:
        """Load and place the pipeline (DeviceError / ModelLoadError propagate: they end the run)."""
        from svdflow.pipeline.models import ModelSpec, load_pipeline, resolved_revision

        hardware = self.resolve()
        model = self.spec.model
        spec = ModelSpec(model.source, model.revision, model.variant)
        pipe = load_pipeline(spec, torch_dtype=torch_dtype(hardware.dtype),
                             manifest_dir=str(self.spec.manifest_path.parent))
        pipe.set_progress_bar_config(disable=True)
        self.pipe = apply_hardware(pipe, hardware)
        self.resolved_revision = resolved_revision(pipe, spec)

    def hardware_json(self) -> dict[str, Any] | None:
        if self.hardware is None:
            return None
        return {**self.hardware.to_json(), "oom_retries": list(self.oom_retries)}

    def render(self, job: Job, image, on_step: Callable[[int, int], None] | None = None):
        from svdflow.pipeline.render import render_frames

        if self.pipe is None:
            self.load()
        while True:
            try:
                return render_frames(self.pipe, image, job.params,
                                     decode_chunk_size=self.hardware.decode_chunk_size, on_step=on_step)
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                self._step_down(job, exc)

    def _step_down(self, job: Job, exc: Exception) -> None:
        import torch

        lower = self.hardware.lower_memory()
        if lower is None:
            raise RenderError(f"job '{job.id}': out of GPU memory even with sequential offload and decode chunks "
                              f"of 1 ({exc}); lower width/height/num_frames or free the GPU") from exc
        self.oom_retries.append({"job": job.id, "from": self.hardware.to_json(), "to": lower.to_json()})
        self.reporter.note(f"{job.id}: out of GPU memory; retrying with {_difference(self.hardware, lower)}")
        torch.cuda.empty_cache()
        if lower.offload != self.hardware.offload or lower.forward_chunking != self.hardware.forward_chunking:
            # Offload hooks and chunking are installed on modules: rebuild from a clean load.
            self.pipe = None
            torch.cuda.empty_cache()
            self.hardware = lower
            self.load()
        else:
            self.hardware = lower


def _difference(before: ResolvedHardware, after: ResolvedHardware) -> str:
    old, new = before.to_json(), after.to_json()
    return ", ".join(f"{k}={new[k]}" for k in new if new[k] != old[k] and k != "reason")


def _is_out_of_memory(exc: Exception) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower() and \
        isinstance(exc, RuntimeError)
