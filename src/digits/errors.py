"""The one exception type a user can cause; the CLI turns it into a single sentence and exit status 1."""


class DigitsError(Exception):
    """A problem the user can fix (bad path, corrupted file, unknown name). The message is one full
    sentence that names the cause and the fix; it is shown as it is, never with a traceback."""
