"""The errors every layer raises: one ground-floor module, so no data or model module imports the run folder
for its error type (docs/architecture.md, "dependencies")."""

from __future__ import annotations


class RunError(RuntimeError):
    """A stage cannot run: missing inputs from an earlier stage, or a conflicting earlier run."""


class CaseError(ValueError):
    """A NIfTI file or a volume/mask pair that cannot be used; the message names the file."""
