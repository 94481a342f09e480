"""Errors a user sees. Each message says what is wrong and how to fix it."""


class ArchlabError(Exception):
    """Base of every error archlab reports to a user without a traceback."""


class ConfigError(ArchlabError):
    """Bad configuration: file, environment or flag."""


class LLMError(ArchlabError):
    """A model call failed after its retries, or its answer never validated."""


class BudgetExceeded(ArchlabError):
    """A hard budget stop was reached."""
