"""The one exception type for mistakes a user can make and fix."""


class UserError(Exception):
    """A problem the user caused and can fix; its message names the fix.

    Command-line entry points print it as one line and exit with status 2;
    the app shows it as an error box. Never raised for bugs.
    """
