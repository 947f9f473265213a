"""One exception hierarchy for everything surgeon raises on purpose.

The CLI turns any :class:`SurgeonError` into one line on stderr and exit code 2, so
the message must be a complete sentence a user can act on; context (paths, node and
pass names) goes into the message, not into a traceback.
"""


class SurgeonError(Exception):
    """Base of every error surgeon raises deliberately (usage or input problems)."""

    exit_code = 2


class UsageError(SurgeonError):
    """Command-line or API arguments that cannot be honoured."""


class ModelLoadError(SurgeonError):
    """The model file (or its external data) is missing, unreadable or invalid."""


class ModelSaveError(SurgeonError):
    """The output could not be written; nothing partial is left behind."""


class UnknownPassError(UsageError):
    """A pass name that is not registered."""


class PassError(SurgeonError):
    """A pass could not run at all (as opposed to a pass rolled back by verification)."""


class RuleError(SurgeonError):
    """A user rule file or rule pack is malformed."""


class InputDataError(SurgeonError):
    """Input data for running a model is missing, malformed or does not fit the model."""


class BackendError(SurgeonError):
    """A backend could not be created or could not run the model."""


class BackendUnavailableError(BackendError):
    """The backend's library is not installed here (for example TensorRT)."""
