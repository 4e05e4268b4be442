"""One error hierarchy with one root; the class of an error decides how it is handled.

It lives in `config`, the package every other one may import, so workers, tasks and the
producer all raise and catch the same classes. What a stage does with each (app.tasks.run):

| class                 | handling                                                           |
|-----------------------|--------------------------------------------------------------------|
| EngineDeadError       | drop the engine, rebuild it, retry the whole batch (task.retry)    |
| BatchRejectedError    | split the batch, down to single images; a lone refusal is a record |
| BrokerUnavailableError| retry the task later; the engine is healthy and is kept            |
| PermanentError        | error records at once; retrying would give the same answer         |
"""


class PipelineError(Exception):
    """Base class for every error this project raises on purpose."""


class PermanentError(PipelineError):
    """Retrying will not help; the item gets an error record."""


class RetryableError(PipelineError):
    """A transient fault; the same work may succeed when retried."""


class ConfigError(PermanentError):
    """Settings or prompt files are invalid."""


class PromptError(ConfigError):
    """A prompt file is missing or malformed."""


class UnsupportedModelError(ConfigError):
    """The model's family is known, but the installed vLLM cannot run it (the message says what can)."""


class JobNotFoundError(PermanentError):
    """No job with this id exists in Redis (never created, or expired)."""


class JobStateError(PermanentError):
    """The job is in a state that does not allow this command (finished, still submitting …)."""


class ImageError(PermanentError):
    """An input is not a usable image: unreachable, too large, corrupt, refused (one error record)."""


class OutputParseError(PermanentError):
    """The model's output could not be parsed into the stage's result."""


class EngineError(PipelineError):
    """The inference engine failed; the subclass says whether the engine or the batch is at fault."""


class EngineDeadError(EngineError, RetryableError):
    """The engine is gone or unusable (engine process died, would not start): rebuild and retry."""


class BatchRejectedError(EngineError, PermanentError):
    """The engine refused this batch (a bad request, out of memory for its size): split it."""


class BrokerUnavailableError(RetryableError):
    """Redis did not answer, or refused a write (full): retry without touching the engine."""
