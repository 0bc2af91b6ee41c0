"""The one exception type for problems a user can fix (bad config, bad corpus,
missing model). The CLI prints its message without a traceback and exits 2."""


class AtlasError(Exception):
    """A user-facing error: the message names the file, the pair and the field."""
