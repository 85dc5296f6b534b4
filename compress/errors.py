"""The error type for bad input from the user; the CLI prints it as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a file, a field, a name): one line saying what was expected."""


def first_line(err: BaseException) -> str:
    """An exception's first message line (its type's name when it has none), for one-line errors."""
    return (str(err).splitlines() or [type(err).__name__])[0]
