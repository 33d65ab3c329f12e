"""The page progress bar of ``ocrstream ocr`` and ``ocrstream pipeline run``: pages done / total,
pages per second and the time left, drawn on stderr only when a person is watching a terminal.

Quiet (draws nothing, writes nothing) when stdout or stderr is not a TTY (pipes, redirects, log
collectors) or ``CI`` is set, so scripted output stays clean.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO, Any

# rate_noinv_fmt: "N pages/s" even below one page a second (rate_fmt would flip to "s/ pages").
BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} pages [{elapsed}<{remaining}, {rate_noinv_fmt}]"
)


def wanted(
    stdout: IO[str] | None = None, stderr: IO[str] | None = None, env: Mapping[str, str] | None = None
) -> bool:
    """Whether to draw: both streams are terminals and CI is unset (or false)."""
    env = os.environ if env is None else env
    if env.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    return all(_isatty(s) for s in (stdout or sys.stdout, stderr or sys.stderr))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PageBar:
    """``update(done, total)`` with absolute counts (the total may grow as documents are read);
    a no-op object when ``enabled`` is false. Use as a context manager."""

    def __init__(self, enabled: bool, desc: str = "ocr", stream: IO[str] | None = None) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=0,
                unit=" pages",
                desc=desc,
                bar_format=BAR_FORMAT,
                file=stream or sys.stderr,
                dynamic_ncols=True,
            )

    def update(self, done: int, total: int) -> None:
        bar = self._bar
        if bar is None or (done == bar.n and total == bar.total):
            return
        bar.total = total
        bar.update(done - bar.n)  # refreshes, and feeds tqdm's rate / ETA estimate

    def print(self, text: str) -> None:
        """A line to stdout that does not tear the bar."""
        if self._bar is None:
            print(text)
        else:
            self._bar.write(text, file=sys.stdout)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> PageBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
