"""The error type for bad input from the user; the CLI prints it as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a file, a field, a name): one line saying what was expected."""
