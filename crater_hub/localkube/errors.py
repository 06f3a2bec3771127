"""Kubernetes API errors as ``Status`` objects.

Every failure the API server reports is an :class:`ApiError`; the HTTP layer turns it into the
``{"kind": "Status", ...}`` body real clients (kubernetes_asyncio, kubectl) parse, with the same
``reason`` and ``code`` a real kube-apiserver would send.
"""


class ApiError(Exception):
    """An error with an HTTP code, a machine-readable reason and a human message."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self):
        """The ``Status`` object sent on the wire (also used in-stream for watch errors)."""
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(res, name):
    details = {"kind": res.plural}
    if res.group:
        details["group"] = res.group
    if name:
        details["name"] = name
    return details


def _qualified(res):
    return f"{res.plural}.{res.group}" if res.group else res.plural


def not_found(res, name):
    return ApiError(404, "NotFound", f'{_qualified(res)} "{name}" not found', _details(res, name))


def already_exists(res, name):
    return ApiError(
        409, "AlreadyExists", f'{_qualified(res)} "{name}" already exists', _details(res, name)
    )


def conflict(res, name, why="the object has been modified; please apply your changes to the latest version and try again"):
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(res)} "{name}": {why}',
        _details(res, name),
    )


def invalid(res, name, causes):
    """422 Invalid; ``causes`` is a list of ``(field, message)``."""
    details = _details(res, name)
    details["causes"] = [
        {"reason": "FieldValueInvalid", "message": msg, "field": field} for field, msg in causes
    ]
    text = "; ".join(f"{field}: {msg}" for field, msg in causes)
    kind = res.kind
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', details)


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def forbidden(message):
    return ApiError(403, "Forbidden", message)


def gone(message):
    return ApiError(410, "Expired", message)


def method_not_allowed(message):
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media(message):
    return ApiError(415, "UnsupportedMediaType", message)
