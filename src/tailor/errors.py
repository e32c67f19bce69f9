"""The exception hierarchy: every error tailor raises on bad input is a `TailorError`.

Each subclass also derives from the builtin exception a caller would naturally catch
(`ValueError`, `TypeError`), so generic handlers keep working.
"""

from __future__ import annotations


class TailorError(Exception):
    """Base class of all errors raised by tailor; messages name the offending field or layer."""


class InvalidSubnetError(TailorError, ValueError):
    """A subnet (or search space) is malformed or lies outside the space it is used with."""


class UnsupportedModelError(TailorError, TypeError):
    """A model, or one of its layers, cannot be made elastic or run as asked."""


class CheckpointError(TailorError, ValueError):
    """A checkpoint is missing, corrupt, or was written by something other than tailor."""


class ProfileError(TailorError, ValueError):
    """A latency/accuracy profile is malformed or does not match what it is used with."""


class DataError(TailorError, ValueError):
    """A data set file or argument is wrong (missing field, bad shape, forbidden pickle global, ...)."""


class RecipeError(TailorError, ValueError):
    """A training recipe (TOML file or `TrainConfig`) has an unknown key, a value of the wrong type or out of range."""


class UsageError(TailorError, ValueError):
    """A command-line argument is out of range, or a flag was given in two spellings (the CLI exits with status 2)."""


class SubnetNormFallbackWarning(UserWarning):
    """An evaluated subnet has no SubnetNorm statistics of its own and uses the shared ones."""
