"""Exception types the harness raises for bad input; the CLI prints them without a traceback."""


class FssegError(Exception):
    """Base class for errors caused by user input (config, data files, names)."""


class ConfigError(FssegError):
    """A config key, type or value is invalid."""


class DataError(FssegError):
    """A dataset file is missing, unreadable or inconsistent."""


class RegistryError(FssegError):
    """An unknown method or dataset name was requested."""


class TrainingDiverged(FssegError):
    """The training loss became NaN or infinite."""


class ManifestError(FssegError):
    """An episode manifest is corrupt or does not match what it is used with."""


class OutputError(FssegError):
    """An output file or folder cannot be written (read-only filesystem, no permission, disk full)."""


class RunFolderError(FssegError):
    """A run folder's training state (checkpoint, weights) is unreadable or not finite."""


class LockedError(FssegError):
    """Another fsseg process is writing the same folder."""
