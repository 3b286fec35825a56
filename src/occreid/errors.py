"""User-facing errors: raised for bad input, printed by the CLI as one clear message (no traceback)."""


class OccreidError(Exception):
    """Base class: the message names the file or key at fault and how to fix it."""


class ConfigError(OccreidError):
    """A configuration key is unknown, has the wrong type, or an invalid value."""


class DatasetError(OccreidError):
    """A dataset root or layout is not what the loader expects."""


class CheckpointError(OccreidError):
    """A checkpoint is missing, corrupt, or belongs to another method."""


class LabelError(OccreidError):
    """A part-label file is missing, unreadable, or has the wrong shape."""
