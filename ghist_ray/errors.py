"""The one exception type users see: a single line naming the input and the problem."""


class GhistError(Exception):
    """Bad input or an unmet precondition; the CLI prints it as one line and exits 2."""
