"""svdflow: a declarative batch renderer for Stable Video Diffusion."""

__version__ = "0.1.0"

# Bumped only when a change alters the pixels svdflow produces for the same inputs; it is part of
# every job's content key, so a bump re-renders everything and nothing else does.
RENDER_VERSION = "1"
