"""Shared fixtures: where the real data lives, one backbone for the whole session, CLI runners.

Real data is read from ``../shared/data`` beside the checkout (or ``$LOOKALIKE_DATA``); tests that
need it skip with a clear reason when it is absent. Nothing is ever copied into the repository.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def find_data_dir() -> Path | None:
    """The shared real-data folder, or None when this machine does not have it."""
    env = os.environ.get("LOOKALIKE_DATA", "").strip()
    path = Path(env).expanduser() if env else DEFAULT_DATA
    return path if (path / "mars_8k.jpg").is_file() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = find_data_dir()
    if path is None:
        pytest.skip("real data not found: put the shared data folder at ../shared/data beside "
                    "the checkout or set LOOKALIKE_DATA to it")
    return path.resolve()


@pytest.fixture(scope="session")
def hirise_dir(data_dir) -> Path:
    path = data_dir / "hirise_v1"
    if not (path / "labels.csv").is_file():
        pytest.skip(f"{path}/labels.csv not found in the shared data folder")
    return path


@pytest.fixture(scope="session")
def backbone():
    """The shipped EfficientNet-Lite0, built once per session."""
    from models.backbones import create_backbone

    return create_backbone()


@pytest.fixture(scope="session")
def encoder(backbone):
    """A CPU encoder around the session backbone (tiles are fed at their own size)."""
    from indexer.encoding import Encoder

    return Encoder(backbone, device="cpu")


@contextlib.contextmanager
def environ(**values):
    """Temporarily set (or, with None, remove) environment variables."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_main(argv: list[str], **env) -> tuple[int, str, str]:
    """Run ``lookalike.cli.main`` in-process; returns (exit code, stdout, stderr).

    Exceptions other than SystemExit propagate, so a crash fails the calling test.
    """
    from lookalike.cli import main

    out, err = io.StringIO(), io.StringIO()
    with environ(**env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def run_cli(argv: list[str], timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """Run ``python -m lookalike`` in a subprocess from the repository root."""
    full_env = dict(os.environ)
    for k, v in env.items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = str(v)
    return subprocess.run([sys.executable, "-m", "lookalike", *map(str, argv)], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_user_error(code: int, stderr: str, *needles: str) -> None:
    """Exit status 2 and exactly one stderr line ``lookalike: error: ...`` without a traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one stderr line, got:\n{stderr}"
    assert lines[0].startswith("lookalike: error:"), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"


@pytest.fixture(scope="session")
def mars_index(tmp_path_factory, data_dir) -> Path:
    """`lookalike index mars_8k --zones 30N,31N` on the real mosaic, built once per session."""
    out = tmp_path_factory.mktemp("mars") / "index"
    code, stdout, stderr = run_main(["index", "mars_8k", "--zones", "30N,31N", "--out", out],
                                    LOOKALIKE_DATA=data_dir)
    assert code == 0, stderr
    return out
