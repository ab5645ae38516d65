"""svdflow: a declarative batch renderer for Stable Video Diffusion."""

# The one place the version is defined: pyproject.toml reads it (dynamic version), `svdflow --version`
# prints it, and every index entry and embedded provenance records it (versions.svdflow).
__version__ = "0.2.0"

# Bumped only when a change alters the pixels svdflow produces for the same inputs; it is part of
# every job's content key, so a bump re-renders everything and nothing else does.
RENDER_VERSION = "1"
