"""The one error type the command line turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's input (a file, a name, a binding) that they can fix.

    The message is a single line that names the offending file or value and says how to fix it.
    """
