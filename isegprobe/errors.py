"""The error users see: the CLI turns it into a one-line message and a non-zero exit, without a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, an option, a dataset): the message names it and says what was expected."""
