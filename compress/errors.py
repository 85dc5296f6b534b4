"""The error types for bad input: ``UserError`` (the CLI prints it as one line and exits with
code 2) and ``FieldError``, raised by a config object's checks on one of its fields."""


class UserError(Exception):
    """Bad input from the user (a file, a field, a name): one line saying what was expected."""


def first_line(err: BaseException) -> str:
    """An exception's first message line (its type's name when it has none), for one-line errors."""
    return (str(err).splitlines() or [type(err).__name__])[0]


class FieldError(ValueError):
    """Raised by a config's checks; the loader adds the file, the full key path and the line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise FieldError(key, message)
