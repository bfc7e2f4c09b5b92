"""The one exception type whose message a person reads: the thing, the reason, the fix."""


class PosswarmError(Exception):
    """An expected failure (bad input, bad config, a peer's garbage, a tampered release).

    The message is a single line that names the thing, says why, and says what to do,
    e.g. ``release pos-os 2026.11: manifest signature does not match key 3f2a... (was it re-signed?)``.
    Command-line entry points print it and exit non-zero; they never print a traceback for it.
    """


class Unreachable(PosswarmError):
    """A network failure that may pass (a timeout, a refused connection, an HTTP error page).

    Never a verdict: whatever needed the answer is retried later, and nothing is remembered as refused.
    ``detail`` is the failure alone (``timed out``), for a caller that words the message itself.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message
