"""The ``lookalike`` command: argument parsing only. Each command turns its arguments into one
call of the Python API. User mistakes print one line on stderr and exit with status 2.

The parser is built in :mod:`lookalike.cli_parsers`, the commands run in :mod:`lookalike.cli_commands`."""

from __future__ import annotations

import errno
import sys
import warnings

from lookalike import cli_options as opts
from lookalike.cli_parsers import build_parser
from lookalike.errors import LookalikeError

__all__ = ["build_parser", "main"]


def _one_line(exc: BaseException) -> str:
    """An error message on one line (a message quoting a file or a library may hold breaks)."""
    return " ".join(str(exc).splitlines())


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="rasterio")
    argv = opts.glue_coordinates(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (
        LookalikeError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
        FileExistsError,
    ) as exc:
        print(f"lookalike: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            if exc.filename is None:
                raise
            # about a file the user named (a name too long, a loop of links, ...)
            print(f"lookalike: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        # writes are atomic: what was there before the failed write is still there, intact
        print(
            f"lookalike: error: {exc.strerror or exc} (nothing was replaced: what was written before "
            "is intact; free some space and run the command again)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("lookalike: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
