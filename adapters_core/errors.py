"""Exceptions raised by adapters_core; every one derives from :class:`AdapterError`."""

from __future__ import annotations


class AdapterError(Exception):
    """Base class of every error raised by adapters_core."""


class AdapterConfigError(AdapterError, ValueError):
    """A config is malformed, names an unknown method, or sets an unsupported value."""


class AdapterLoadError(AdapterError):
    """Weights do not fit the model: missing or unexpected keys, or shape mismatches."""


class UnsafeWeightsError(AdapterError):
    """A weights file would execute code or reference objects outside the allow-list."""


class CorruptWeightsError(AdapterError):
    """A weights file is truncated, malformed or otherwise unreadable."""


class UnsafeArchiveError(AdapterError):
    """An archive contains paths escaping its target folder, links, or other unsafe members."""


class ChecksumMismatchError(AdapterError):
    """Downloaded content does not match its published checksum."""


class AdapterNotFoundError(AdapterError, FileNotFoundError):
    """No adapter matches the given identifier, folder or name."""


class CompositionError(AdapterError, ValueError):
    """A composition setup is malformed or uses a block a method does not support."""


__all__ = [
    "AdapterError",
    "AdapterConfigError",
    "AdapterLoadError",
    "UnsafeWeightsError",
    "CorruptWeightsError",
    "UnsafeArchiveError",
    "ChecksumMismatchError",
    "AdapterNotFoundError",
    "CompositionError",
]
