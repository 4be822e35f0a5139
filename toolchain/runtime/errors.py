"""The one exception family callers need to catch: every user-facing failure is a ToolchainError."""

from __future__ import annotations


class ToolchainError(Exception):
    """Base class: a problem the user can fix; the message says what was wrong and how to fix it."""


class InputError(ToolchainError, ValueError):
    """Bad input to a runtime call (wrong type, None item, ...)."""


class ArtifactError(ToolchainError):
    """The artifact directory is missing, damaged or does not match its manifest."""


class ProviderError(ToolchainError):
    """The requested execution provider cannot be used on this machine."""


class ExportError(ToolchainError):
    """The model could not be exported."""


class ParityError(ToolchainError):
    """The exported model's outputs differ from PyTorch beyond the recorded tolerance."""


class SourceError(ToolchainError):
    """The model source (directory, hub id, package) cannot be found or read."""
