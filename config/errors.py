"""One error hierarchy with one root; retryable errors apart from permanent ones.

It lives in `config`, the package every other one may import, so workers, tasks and the
producer all raise and catch the same classes.
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


class ImageError(PermanentError):
    """An input file is not a usable image (corrupt, too large, unreadable …)."""


class OutputParseError(PermanentError):
    """The model's output could not be parsed into the stage's result."""


class EngineError(RetryableError):
    """The inference engine failed on a batch (out of memory, crashed engine …)."""


class BlobMissingError(PermanentError):
    """A prepared image is no longer in the blob store (expired or deleted)."""


class BrokerUnavailableError(RetryableError):
    """Redis did not answer within the allowed time."""
