"""The draft tier (per-job `cfg_until` and `cache_interval`): lossy, opt-in, for previews.

Both are diffusers hooks registered for one pipeline call (one video) and removed after it, so their
state is the video's and nothing is left on the UNet for the next job:

- `cfg_until`: diffusers' SVD pipeline batches the two classifier-free-guidance branches as
  [uncond, cond]. From step `cfg_until x steps` on, the UNet hook runs the conditional half alone and
  returns it for both halves; the pipeline's `uncond + g * (cond - uncond)` then is `cond` exactly.
  One UNet batch instead of two.
- `cache_interval` N: DeepCache (Ma et al., 2023) on SVD's UNet. Of every N steps, the first runs the
  whole UNet; the N-1 after it run only the outermost blocks (conv_in, the first down block, the
  last up block, conv_out) and take the input of the last up block, the deep features, from the last
  full step. The skipped blocks get placeholders of the right shapes (expanded zeros, no memory)
  for everything they would have passed along, which only other skipped blocks read. At 576x1024x25
  the outermost level still holds most of the attention work (9,216 tokens), so a skipped step costs
  roughly a third of a full one (estimated from the FLOP split; to be measured).

The UNet hook counts the pipeline's UNet calls (one per step: the hook is registered outside every
hook that splits a call, such as sequential CFG) and decides per step whether CFG runs and whether the
step is full. A change of batch layout (CFG turning off) starts a new cache phase with a full step.
A deep block reuses what it kept only when its input has the shape it had at the last full step,
per call within the step (sequential CFG runs the UNet twice per step, each branch with its own
features): anything else runs it for real.

The UNet hook has no `new_forward` (only pre- and post-forward), so a hook beneath it that removes
itself (diffusers' lazy group-offloading prefetch does so after the first call) cannot bypass it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

STEPS_HOOK = "svdflow.draft_steps"
DEEP_HOOK = "svdflow.deep_cache"


@dataclass(frozen=True)
class DraftPlan:
    """One video's draft settings."""

    steps: int
    cfg_until: float = 1.0
    cache_interval: int = 1

    @classmethod
    def of(cls, params: Any) -> DraftPlan:
        return cls(params.num_inference_steps, params.cfg_until, params.cache_interval)

    @property
    def active(self) -> bool:
        return self.cfg_until < 1.0 or self.cache_interval > 1

    def uses_cfg(self, step: int) -> bool:
        return step < self.cfg_until * self.steps


@dataclass
class _Video:
    """The state of one pipeline call, shared by its hooks."""

    plan: DraftPlan
    step: int = -1
    layout: int | None = None  # the UNet batch of this step's call (after cfg_until)
    phase_start: int = 0  # the first step of the current cache phase
    full: bool = True  # whether this step runs the whole UNet
    halved: bool = False  # whether this step's call was cut to its conditional half
    log: list[tuple[int, int, bool]] = field(default_factory=list)  # (step, batch, full): what ran


class DraftStepsHook(ModelHook):
    """On the UNet: counts steps, cuts CFG after cfg_until, says whether a step is full."""

    def __init__(self, video: _Video):
        super().__init__()
        self.video = video
        self._signature: inspect.Signature | None = None

    def pre_forward(self, module, *args, **kwargs):
        video, plan = self.video, self.video.plan
        video.step += 1
        if self._signature is None:
            self._signature = inspect.signature(type(module).forward)
        bound = self._signature.bind(module, *args, **kwargs)
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(arguments)))  # self
        batch = arguments["sample"].shape[0]
        # One video per call: a batch of 2 is [uncond, cond].
        video.halved = batch == 2 and not plan.uses_cfg(video.step)
        if video.halved:
            arguments = {name: _cond_half(value) for name, value in arguments.items()}
            batch = 1
        if batch != video.layout:
            video.layout, video.phase_start = batch, video.step
        video.full = (video.step - video.phase_start) % plan.cache_interval == 0
        video.log.append((video.step, batch, video.full))
        return (), arguments

    def post_forward(self, module, output):
        if not self.video.halved:
            return output
        if isinstance(output, tuple):
            return (torch.cat([output[0], output[0]]), *output[1:])
        output.sample = torch.cat([output.sample, output.sample])
        return output


def _cond_half(value):
    """The conditional branch of a [uncond, cond] argument (a scalar timestep is left alone)."""
    if torch.is_tensor(value) and value.ndim and value.shape[0] == 2:
        return value[1:]
    return value


class DeepBlockHook(ModelHook):
    """On a deep block: runs it on full steps and keeps what it returned (the real output for the
    cache point, its shapes for the others); on the other steps returns that instead of running."""

    def __init__(self, video: _Video, cache_point: bool):
        super().__init__()
        self.video, self.cache_point = video, cache_point
        self.kept: dict[int, tuple[torch.Size, Any]] = {}  # call within the step -> (input shape, output)
        self.runs = 0  # forwards that really ran (for tests and the bench)
        self._step, self._call = None, 0

    def new_forward(self, module, *args, **kwargs):
        video = self.video
        if video.step != self._step:
            self._step, self._call = video.step, 0
        call, self._call = self._call, self._call + 1
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        kept = self.kept.get(call)
        if not video.full and kept is not None and kept[0] == hidden.shape:
            return kept[1] if self.cache_point else _placeholders(kept[1])
        self.runs += 1
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.kept[call] = (hidden.shape, output if self.cache_point else _shapes(output))
        return output


def _shapes(value):
    if torch.is_tensor(value):
        return (value.shape, value.dtype, value.device)
    return tuple(_shapes(v) for v in value)


def _placeholders(shapes):
    if isinstance(shapes[0], torch.Size):
        shape, dtype, device = shapes
        return torch.zeros((), dtype=dtype, device=device).expand(shape)
    return tuple(_placeholders(s) for s in shapes)


def deep_blocks(unet) -> list[torch.nn.Module]:
    """The blocks a skipped step does not run: every down block but the first, the mid block, every up
    block but the last. The last of them (the second-to-last up block) is the cache point."""
    return [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]


@contextmanager
def draft_hooks(unet, plan: DraftPlan) -> Iterator[_Video | None]:
    """The draft tier's hooks on `unet` for one pipeline call (none when the plan is not a draft)."""
    if not plan.active:
        yield None
        return
    video = _Video(plan)
    registered: list[tuple[torch.nn.Module, str]] = []
    try:
        HookRegistry.check_if_exists_or_initialize(unet).register_hook(DraftStepsHook(video), STEPS_HOOK)
        registered.append((unet, STEPS_HOOK))
        if plan.cache_interval > 1:
            blocks = deep_blocks(unet)
            for block in blocks:
                hook = DeepBlockHook(video, cache_point=block is blocks[-1])
                HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, DEEP_HOOK)
                registered.append((block, DEEP_HOOK))
        yield video
    finally:
        for module, name in reversed(registered):
            HookRegistry.check_if_exists_or_initialize(module).remove_hook(name, recurse=False)
