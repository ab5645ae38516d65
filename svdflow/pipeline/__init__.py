"""Getting a StableVideoDiffusionPipeline: from the hub, a local folder (builtin:toy is one), or built
from code.

`models` resolves a manifest's `model:` section to a loaded pipeline and turns every loading failure
into a ModelLoadError that says what to do; `tiny` builds the `builtin:tiny` pipeline and the
full-size SVD / SVD-XT architectures with random weights for benchmarks. What a source names and the
builtins' configs live in svdflow/models/, which needs no torch.
"""

import logging


class _QuietImageProcessorFallback(logging.Filter):
    """transformers >= 5 warns on every import of diffusers' SVD pipeline (which names
    CLIPImageProcessor) that torchvision is missing and it uses the PIL processor instead. svdflow
    saves and loads the PIL processor on purpose (same preprocessing, hence the same frames, with or
    without torchvision), so the warning only tells users about a choice they did not make."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_QuietImageProcessorFallback())
