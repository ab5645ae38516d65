"""The pipelines a bench run shares between cases: one resident pipeline, switched from one setup to
the next by adding and removing svdflow's hooks (every one comes off cleanly), and a fresh pipeline
for each offloaded case (offload hooks do not)."""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from svdflow.bench.config import BenchConfig
from svdflow.pipeline.process_state import ProcessChanges


@dataclass(frozen=True)
class Setup:
    """What a resident case installs on the pipeline (what the run's profiles would, one switch each)."""

    shortcut: bool = True  # the one-token cross-attention shortcut (every profile)
    attention: str | None = None  # the SDPA backend put first; None: torch's own choice
    compile: bool = False  # regional torch.compile of the UNet
    compile_vae: bool = False  # torch.compile of the VAE decoder
    fp8: bool = False
    mode: str = "default"  # torch.compile mode of the UNet
    coordinate_descent: bool = False
    sequential_cfg: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_BARE = Setup(shortcut=False)  # a freshly built pipeline: nothing installed


class BenchState:
    def __init__(self, config: BenchConfig):
        self.config = config
        self.cuda = config.cuda
        self.pipe = None
        self.setup: Setup | None = None  # what is installed on self.pipe (None: offload hooks, or nothing known)
        self.where: str | None = None
        self.reference = None  # balanced's final latents
        self.reference_frames = None  # and its uint8 frames
        self.seed_offload = False  # self.pipe carries seed-offload's hooks (seed-offload-lowmem reuses it)
        self.build_s: float | None = None
        self.attention: str | None = None  # the backend the probe chose
        self.attention_probe: dict[str, Any] | None = None
        self.image = bench_image(config.width, config.height)
        self.changes = ProcessChanges()  # process-wide settings the cases change; restored at the end

    def fresh(self, where: str):
        """A new pipeline with nothing installed, its weights on `where` (the device, or "cpu" for
        offloading); the previous one is dropped first."""
        self.discard()
        started = time.perf_counter()
        # Always drawn on the benchmark's device, then moved: the random weights then do not depend
        # on where a case keeps them (a CPU draw differs), so every case's latents are comparable.
        self.pipe = build(self.config)
        if where != self.config.device:
            self.pipe.to(where)
        self.where, self.setup = where, _BARE
        self.build_s = round(time.perf_counter() - started, 2)
        return self.pipe

    def resident(self, setup: Setup, changes: ProcessChanges | None = None):
        """The resident pipeline with exactly `setup` installed: the current one switched over when it
        is resident, else a new one. `changes` receives the process-wide settings compiling changes
        (default: the run's, restored at its end)."""
        if self.pipe is None or self.setup is None or self.where != self.config.device:
            self.fresh(self.config.device)
        self._switch(self.setup, setup, changes or self.changes)
        self.setup = setup
        return self.pipe

    def _switch(self, old: Setup, new: Setup, changes: ProcessChanges) -> None:
        import torch

        from svdflow.pipeline.compile import compile_unet, compile_vae_decoder
        from svdflow.pipeline.hooks.attention_backend import set_attention_backend
        from svdflow.pipeline.hooks.cross_attention import set_cross_attention_shortcut
        from svdflow.pipeline.hooks.fp8 import set_fp8
        from svdflow.pipeline.hooks.regional_compile import remove_compiled_forward, remove_regional_compile
        from svdflow.pipeline.hooks.sequential_cfg import set_sequential_cfg

        unet = self.pipe.unet
        # What a compiled graph traced through: changing any of it under compile compiles anew (from
        # the inductor cache where it holds the graphs already).
        traced = ("shortcut", "attention", "fp8", "mode", "coordinate_descent", "sequential_cfg")
        recompile = (old.compile or new.compile) and (
            old.compile != new.compile or any(getattr(old, f) != getattr(new, f) for f in traced))
        if recompile and old.compile:
            remove_regional_compile(unet)
            torch._dynamo.reset()  # drop the compiled graphs (and their hold on the weights)
        if old.compile_vae and (not new.compile_vae or recompile):
            remove_compiled_forward(self.pipe.vae.decoder)
        set_cross_attention_shortcut(unet, new.shortcut)
        set_attention_backend(unet, new.attention)
        set_sequential_cfg(unet, new.sequential_cfg)
        set_fp8(unet, new.fp8)
        if new.compile and (recompile or not old.compile):
            compile_unet(self.pipe, changes, mode=new.mode, coordinate_descent=new.coordinate_descent,
                         backend="inductor" if self.cuda else "eager")
        if new.compile_vae:
            compile_vae_decoder(self.pipe, changes, backend="inductor" if self.cuda else "eager")

    def probe_attention(self) -> str | None:
        """The backend to put first, probed once per run on the bench's shapes (on a CPU among the two
        kernels it has, so the code path runs; the profiles probe on CUDA only)."""
        if self.attention_probe is None:
            from svdflow.pipeline.attention import GPU_CANDIDATES, attention_shapes, fastest, time_backends
            from svdflow.pipeline.device import torch_dtype
            from svdflow.pipeline.hooks.attention_backend import orders_backends

            if self.pipe is None:
                self.fresh(self.config.device)
            shapes = attention_shapes(self.pipe.unet.config, self.config.shape)
            candidates = GPU_CANDIDATES if self.cuda else ("flash", "math")
            timings = time_backends(shapes, self.config.device, torch_dtype(self.config.dtype), candidates)
            self.attention = fastest(timings) if orders_backends() else None
            self.attention_probe = {"shapes": shapes, "seconds": timings, "chosen": self.attention}
        return self.attention

    def discard(self) -> None:
        import torch

        self.pipe, self.setup, self.where, self.seed_offload = None, None, None, False
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def build(config: BenchConfig):
    """The bench's pipeline, its weights drawn on the bench's device."""
    from svdflow.pipeline.device import torch_dtype

    dtype = torch_dtype(config.dtype)
    if config.variant == "tiny":
        from svdflow.pipeline.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(dtype).to(config.device)
    else:
        from svdflow.pipeline.tiny import build_full_size_pipeline

        pipe = build_full_size_pipeline(config.variant, dtype=dtype, device=config.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_image(width: int, height: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    pixels = (0.5 * x + 0.3 * y + 60 * rng.random((height, width, 3))).clip(0, 255).astype("uint8")
    return Image.fromarray(pixels)


def hardware(config: BenchConfig, profile: str, setup: Setup | None = None, **overrides):
    """The ResolvedHardware a run of `profile` would record, with `setup`'s switches."""
    from svdflow.hardware import PROFILE_SETTINGS, ResolvedHardware

    settings = {**PROFILE_SETTINGS[profile], **overrides}
    setup = setup or Setup()
    return ResolvedHardware(profile=profile, device=config.device, dtype=config.dtype,
                            offload=settings["offload"], forward_chunking=settings["forward_chunking"],
                            decode_chunk_size=settings["decode_chunk_size"], compile=setup.compile,
                            reason="bench", sequential_cfg=settings["sequential_cfg"], compile_vae=setup.compile_vae,
                            attention_backend=setup.attention, fp8=setup.fp8)


def with_setup(setup: Setup, **changes) -> Setup:
    return replace(setup, **changes)
