"""Errors that reach the user as a message, never as a traceback."""


class UserError(Exception):
    """A mistake in the user's input (config, file, data) with a message that says how to fix it.

    The command line prints the message and exits with status 2; no traceback is shown.
    """
