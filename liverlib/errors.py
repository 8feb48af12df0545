"""The errors every layer raises: one ground-floor module, so no data or model module imports the run folder
for its error type (docs/architecture.md, "dependencies")."""

from __future__ import annotations


class RunError(RuntimeError):
    """A stage cannot run: missing inputs from an earlier stage, or a conflicting earlier run."""


class CaseError(ValueError):
    """A NIfTI file or a volume/mask pair that cannot be used; the message names the file."""


class WriteError(OSError):
    """A file could not be written (disk full, no permission, an I/O error); the message names the target file (not a
    temporary), the system's reason and what was kept. An ``OSError``, so every handler of one still applies (the CLI:
    one line, exit 1)."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}" if self.filename else super().__str__()
