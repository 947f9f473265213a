"""One exception hierarchy for everything surgeon raises on purpose.

The CLI turns any :class:`SurgeonError` into one line on stderr and exit code 2, so
the message must be a complete sentence a user can act on; context (paths, node and
pass names) goes into the message, not into a traceback.
"""


class SurgeonError(Exception):
    """Base of every error surgeon raises deliberately (usage or input problems).

    A message about an argument names it in the library's terms: ``{0}``, ``{1}``... in the
    message stand for the API keywords given after it, so that
    ``UsageError("{0} must be at least 1", "iterations")`` reads "iterations must be at least
    1" from Python, and the command line, which knows its flags, words it with
    :meth:`worded` as "--iterations must be at least 1".
    """

    exit_code = 2

    def __init__(self, message: str = "", *options: str):
        self.template, self.options = message, tuple(options)
        super().__init__(self.worded(str) if options else message)

    def worded(self, name=str) -> str:
        """The message with each option named by ``name(keyword)`` (a flag, for the CLI)."""
        text = self.template
        for i, option in enumerate(self.options):
            text = text.replace("{%d}" % i, name(option))
        return text


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
