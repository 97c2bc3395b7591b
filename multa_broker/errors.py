"""User-facing errors: the CLI prints them as one line, never as a traceback."""


class MultaError(Exception):
    """An error caused by the user's input or environment, shown as one line."""


class CaptureError(MultaError):
    """A capture file that cannot be read; the message names the file."""
