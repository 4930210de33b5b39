"""Errors a user can fix. The CLI turns each into one line on stderr and exit code 2, never a traceback."""


class UsageError(Exception):
    """Bad input: an unknown name, a malformed option, a missing dataset."""


class PluginError(UsageError):
    """A plugin that fails to import or does not fit the API; the message names the plugin."""


class DataMissingError(UsageError):
    """A workload's dataset is not prepared; the message gives the command that prepares it."""
