"""The one exception type whose message is shown to users as a single line."""


class HetmapError(Exception):
    """A problem with the user's input: the CLI prints it and exits non-zero.

    The message names the file, field or node at fault and what to do.
    Anything else raised inside hetmap is an internal error (a bug).
    """
