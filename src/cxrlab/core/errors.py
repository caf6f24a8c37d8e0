"""User-facing errors: one sentence naming the file or key and what was expected."""


class CxrlabError(Exception):
    """An error caused by input the user controls (a file, a param, a mirror).

    Stage scripts print its message as one line and exit with status 1, with no
    traceback, because the message already says what is wrong and how to fix it.
    """


class DataError(CxrlabError):
    """A data file is missing, corrupt, or not of the expected layout."""


class ConfigError(CxrlabError):
    """A param is missing, unknown, or of the wrong type."""


class TrainingDiverged(CxrlabError):
    """Training ran away (a non-finite loss, or a loss far above its best); nothing is saved."""
