"""Errors a user can fix. The CLI prints them as one message and exits 2 (traceback only with --debug)."""


class PrefoptError(Exception):
    """A problem with the user's input, configuration or environment, stated so they can fix it."""


class ConfigError(PrefoptError):
    """A configuration value is missing, unknown, or of the wrong type."""


class PluginError(PrefoptError):
    """A plugin is missing, duplicated, or failed to load."""


class MissingWeightsError(PrefoptError):
    """Model weights the run needs are not available locally or from the hub."""


class MediaSizeError(PrefoptError, ValueError):
    """Media of a size the backbone cannot take (a ValueError too, for callers that catch those)."""
