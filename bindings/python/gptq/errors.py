"""Status codes of libgptq as Python exceptions.

Every failing call raises a subclass of GptqError carrying the status code and the
message the library recorded in its context (gptq_ctx_last_error), e.g.
``ShapeError: hessian has 512 input features, the layer 256 (status -8: shape)``.
"""

from . import _lib

OK = _lib.K["GPTQ_OK"]


class GptqError(Exception):
    """A libgptq call failed. ``status`` is the negative gptq_status value,
    ``message`` the library's description of what failed."""

    status = None

    def __init__(self, status, message):
        self.status = status
        self.message = message
        name = _lib.lib.gptq_strerror(status).decode()
        super().__init__("%s (status %d: %s)" % (message or name, status, name))


class InvalidArgumentError(GptqError, ValueError):
    status = _lib.K["GPTQ_ERR_INVALID_ARGUMENT"]


class OutOfMemoryError(GptqError, MemoryError):
    status = _lib.K["GPTQ_ERR_OUT_OF_MEMORY"]


class NotSupportedError(GptqError):
    status = _lib.K["GPTQ_ERR_NOT_SUPPORTED"]


class NotPositiveDefiniteError(GptqError):
    status = _lib.K["GPTQ_ERR_NOT_POSITIVE_DEFINITE"]


class NumericError(GptqError, ArithmeticError):
    status = _lib.K["GPTQ_ERR_NUMERIC"]


class GptqIOError(GptqError):
    """open/read/write/rename failed (named apart from the built-in OSError)."""
    status = _lib.K["GPTQ_ERR_IO"]


class MalformedError(GptqError):
    status = _lib.K["GPTQ_ERR_MALFORMED"]


class ShapeError(GptqError, ValueError):
    status = _lib.K["GPTQ_ERR_SHAPE"]


class DeviceError(GptqError):
    status = _lib.K["GPTQ_ERR_DEVICE"]


class CancelledError(GptqError):
    status = _lib.K["GPTQ_ERR_CANCELLED"]


class InternalError(GptqError):
    status = _lib.K["GPTQ_ERR_INTERNAL"]


class NotFoundError(GptqError, LookupError):
    status = _lib.K["GPTQ_ERR_NOT_FOUND"]


_BY_STATUS = {cls.status: cls for cls in (
    InvalidArgumentError, OutOfMemoryError, NotSupportedError, NotPositiveDefiniteError,
    NumericError, GptqIOError, MalformedError, ShapeError, DeviceError, CancelledError,
    InternalError, NotFoundError)}


def error(status, message):
    """The exception for a status code (GptqError itself for a code this binding does
    not know yet: new ones are only appended)."""
    return _BY_STATUS.get(status, GptqError)(status, message)


def check(status, ctx_handle):
    """Raise for a failed call on a context; the message is the context's last error."""
    if status != OK:
        msg = _lib.lib.gptq_ctx_last_error(ctx_handle) if ctx_handle else b""
        raise error(status, msg.decode(errors="replace"))
