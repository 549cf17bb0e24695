"""Errors a user can cause and fix. The CLI prints them as one line, without a traceback."""


class LookalikeError(Exception):
    """Base class for every error caused by input (files, options, data) rather than a bug."""


class SourceError(LookalikeError):
    """A raster or image folder cannot be read or has no usable georeferencing."""


class IndexCorruptError(LookalikeError):
    """An index directory is missing files, partial, or fails its checksums."""


class CodeLengthError(LookalikeError):
    """A code does not have the number of bits the index was built with."""


class ModelError(LookalikeError, ValueError):
    """A backbone name, weights file or model file cannot be used."""


class OptionError(LookalikeError, ValueError):
    """A value is outside what its option accepts (a zone label, a tile size, a group size)."""
