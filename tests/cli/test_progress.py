"""CLI progress: ``ocrstream pipeline run`` and ``ocrstream ocr`` draw a page bar (pages, pages/s,
time left) on a real terminal (a pseudo-terminal here), and nothing in pipes or under CI."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import sys
import termios
import threading

import pytest

from ocrstream.cli import main, progress
from tests.documents import make_pdf, random_words

# "ocr: 100%|█████| 3/3 pages [00:01<00:00, 2.71 pages/s]"
ANY_BAR = re.compile(r"\d+%\||[\d?.]+ ?pages?/s|[\d.]+s/ ?pages?")  # any tqdm bar, ours or a default one
FINAL_BAR = re.compile(r"ocr: 100%\|[^|]*\| (\d+)/(\d+) pages \[\d\d:\d\d<00:00, +[\d.]+ pages/s\]")


class Terminal:
    """A pseudo-terminal as the process's stdout and stderr; ``output`` is what it showed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))  # 140 columns
        self.tty = os.fdopen(slave, "w", buffering=1, encoding="utf-8")
        self.chunks: list[bytes] = []
        # Drained while the command runs: a full pty buffer would block its writes.
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        monkeypatch.setattr(sys, "stdout", self.tty)
        monkeypatch.setattr(sys, "stderr", self.tty)

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the slave side was closed
                return
            if not data:
                return
            self.chunks.append(data)

    def close(self) -> str:
        self.tty.close()
        self.reader.join(timeout=30)
        os.close(self.master)
        return b"".join(self.chunks).decode("utf-8", "replace")


def test_wanted_only_on_terminals_outside_ci(monkeypatch):
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w")
    r, w = os.pipe()
    pipe = os.fdopen(w, "w")
    try:
        assert progress.wanted(tty, tty, {})
        assert progress.wanted(tty, tty, {"CI": "false"})
        assert not progress.wanted(tty, tty, {"CI": "true"})
        assert not progress.wanted(tty, tty, {"CI": "1"})
        assert not progress.wanted(pipe, tty, {})  # stdout piped: `ocrstream ocr x.pdf | less`
        assert not progress.wanted(tty, pipe, {})  # stderr redirected to a log
    finally:
        for f in (tty, pipe):
            f.close()
        os.close(master)
        os.close(r)


@pytest.fixture
def docs(tmp_path, rng):
    src = tmp_path / "in"
    src.mkdir()
    n_pages = 0
    for i in range(2):
        texts = [random_words(rng, 2) for _ in range(rng.randint(1, 3))]
        (src / f"d{i}.pdf").write_bytes(make_pdf(texts))
        n_pages += len(texts)
    return src, n_pages


def run_pipeline(tmp_path, src, checkpoint, *extra: str) -> int:
    return main(
        ["pipeline", "run", str(src), "--out", str(tmp_path / "out"), "--mode", "tiny"]
        + ["--checkpoint", str(checkpoint), "--store", str(tmp_path / "store"), *extra]
    )


@pytest.fixture
def short_decodes(monkeypatch):
    monkeypatch.setenv("OCRSTREAM_DECODER_MAX_NEW_TOKENS", "8")
    monkeypatch.setenv("OCRSTREAM_DECODER_LADDER", "t=0.0")
    monkeypatch.delenv("CI", raising=False)


def test_pipeline_run_bar_on_a_terminal(tmp_path, docs, tiny_checkpoint, short_decodes, monkeypatch):
    src, n_pages = docs
    term = Terminal(monkeypatch)
    try:
        rc = run_pipeline(tmp_path, src, tiny_checkpoint)
    finally:
        shown = term.close()
    assert rc == 0
    final = FINAL_BAR.findall(shown)
    assert final and final[-1] == (str(n_pages), str(n_pages)), shown[-600:]
    assert f"2 documents, {n_pages} pages" in shown  # the summary still follows the bar


def test_pipeline_run_quiet_in_pipes_and_under_ci(
    tmp_path, docs, tiny_checkpoint, short_decodes, capfd, monkeypatch
):
    src, n_pages = docs
    assert run_pipeline(tmp_path / "a", src, tiny_checkpoint) == 0
    out, err = capfd.readouterr()
    assert not ANY_BAR.search(out + err) and f"2 documents, {n_pages} pages" in out

    monkeypatch.setenv("CI", "true")
    term = Terminal(monkeypatch)
    try:
        assert run_pipeline(tmp_path / "b", src, tiny_checkpoint) == 0
    finally:
        shown = term.close()
    assert not ANY_BAR.search(shown) and f"2 documents, {n_pages} pages" in shown

    monkeypatch.delenv("CI")
    term = Terminal(monkeypatch)
    try:
        assert run_pipeline(tmp_path / "c", src, tiny_checkpoint, "--no-progress") == 0
    finally:
        shown = term.close()
    assert not ANY_BAR.search(shown)


def test_ocr_bar_on_a_terminal_and_quiet_in_a_pipe(tmp_path, rng, tiny_checkpoint, capfd, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    texts = [random_words(rng, 2) for _ in range(rng.randint(2, 4))]
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(make_pdf(texts))
    missing = tmp_path / "missing.pdf"
    args = ["ocr", str(pdf), str(missing), "--checkpoint", str(tiny_checkpoint), "--mode", "tiny"]
    args += ["--prompt", "free_ocr", "--max-new-tokens", "4", "--batch", "1", "--out", str(tmp_path / "out")]
    term = Terminal(monkeypatch)
    try:
        rc = main(args)
    finally:
        shown = term.close()
    assert rc == 1  # the missing file is an error, the other one is read
    final = FINAL_BAR.findall(shown)
    assert final and final[-1] == (str(len(texts)), str(len(texts))), shown[-600:]
    assert (tmp_path / "out" / "doc.md").read_text().count("<!-- page ") == len(texts)

    monkeypatch.undo()
    assert main(args) == 1
    out, err = capfd.readouterr()
    assert not ANY_BAR.search(out + err) and "missing.pdf" in err
