"""Errors a user can fix. The CLI turns each into one line on stderr and exit code 2, never a traceback."""


class UsageError(Exception):
    """Bad input: an unknown name, a malformed option, a missing dataset."""


class PluginError(UsageError):
    """A plugin that fails to import or does not fit the API; the message names the plugin."""


class DataMissingError(UsageError):
    """A workload's dataset is not prepared; the message gives the command that prepares it."""


class TrialAborted(Exception):
    """A data-parallel trial failed on one of its ranks: it was recorded, and the command cannot go on (its process
    group has an abandoned collective). The CLI prints one line and exits with code 1."""


class PluginWarning(UserWarning):
    """A plugin that loads but will surprise: e.g. an entry point whose name differs from the name the plugin gives
    itself. The CLI prints it as one ``warning:`` line."""
