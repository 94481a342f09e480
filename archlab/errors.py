"""Errors a user sees. Each message says what is wrong and how to fix it."""


class ArchlabError(Exception):
    """Base of every error archlab reports to a user without a traceback."""


class ConfigError(ArchlabError):
    """Bad configuration: file, environment or flag."""


class LLMError(ArchlabError):
    """The model's answers never validated (or a call failed for a reason the model
    could see): the step gives up and the experiment records why."""


class UnknownMetric(ArchlabError):
    """A metric whose direction the task does not declare: it cannot be ranked by."""


class BudgetExceeded(ArchlabError):
    """A hard budget stop was reached."""


class ModelUnavailable(ArchlabError):
    """The model cannot be used right now, through nobody's fault in the experiment:
    the campaign stops, the experiment in flight stays resumable, nothing is recorded
    as failed and nothing counts toward the budget. `resumable` tells an outage
    (resume later as is) from a refusal the user must fix first (key, model name)."""

    resumable = True


class ModelUnreachable(ModelUnavailable):
    """Rate limits, 5xx, timeouts or connection errors outlasted the retries."""


class ModelRefused(ModelUnavailable):
    """401/403/404 or an unknown model: retrying cannot help; fix the setting, then resume."""

    resumable = False
