"""Errors a user can cause and fix. The CLI prints them as one line, without a traceback."""


class LookalikeError(Exception):
    """Base class for every error caused by input (files, options, data) rather than a bug."""


class SourceError(LookalikeError):
    """A raster or image folder cannot be read or has no usable georeferencing."""


class IndexCorruptError(LookalikeError):
    """An index directory is missing files, partial, or fails its checksums."""


class CodeLengthError(LookalikeError):
    """A code does not have the number of bits the index was built with."""
