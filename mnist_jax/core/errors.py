"""The one exception type that reaches a user as a one-line message."""


class UserError(Exception):
  """Bad input from the user: a missing file, an impossible config, a bad image.

  The CLI prints the message (which must say what to do) and exits non-zero,
  without a traceback. Library callers can catch it like any exception.
  """

  exit_code = 2
