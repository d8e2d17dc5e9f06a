"""The one error type people see: bad input, told in one clear sentence."""


class UserError(ValueError):
    """Bad input from the user (a file, a flag, a model); the message says what and where."""
