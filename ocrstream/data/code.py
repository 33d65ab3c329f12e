"""Code-like text lines: what technical documents set in monospace (listings, commands, paths).

The prose corpus (``ocrstream.data.corpus``) drops code-like paragraphs on purpose, so a reader
trained on it alone has never seen a monospace identifier, a path or a command line, and reads
the wide letter cells of a monospace face as word gaps ("/etc/secur ity"). Two sources:

* ``iter_code_lines``: source lines of the Python standard library (comments and code, leading
  indentation dropped: a strip starts at its ink), split by file with the corpus' own hash
  (``split_of``), so no file feeds two splits;
* ``shell_line``: command lines, paths, option lists and ``name(8)`` references made from corpus
  words, the Unix vocabulary of administration manuals that no Python file holds.

Typographic quotes: ``smarten`` turns a prose line's ASCII quotes into the curly ones a typeset
document prints (the prose corpus is plain ASCII, so without it the reader never sees them).
"""

from __future__ import annotations

import json
import os
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from ocrstream.data.corpus import Paragraph, split_of

CODE_VERSION = 2  # 2: the length bounds are checked after runs of spaces collapse
MIN_LEN, MAX_LEN = 6, 110
PER_FILE = 60  # lines kept per source file: many files, not a few long ones

# Common Unix command names (generic vocabulary of command lines in manuals).
COMMANDS = (
    "apt", "apt-get", "apt-cache", "aptitude", "dpkg", "dpkg-divert", "dpkg-query", "sudo", "su",
    "ls", "cat", "cp", "mv", "rm", "mkdir", "chmod", "chown", "ln", "find", "grep", "sed", "awk",
    "tar", "gzip", "make", "git", "ssh", "scp", "rsync", "curl", "wget", "systemctl", "journalctl",
    "mount", "umount", "echo", "export", "cd", "less", "man", "ps", "kill", "debuild", "dh_make",
    "lintian", "gpg", "update-alternatives", "service", "ip", "tail", "head", "sort", "xargs",
)  # fmt: skip
OPTIONS = ("-a", "-f", "-l", "-n", "-r", "-v", "-x", "-u", "-i", "-p", "-s", "-e", "-rf", "-xzf")
EXTS = (".conf", ".d", ".so", ".txt", ".py", ".sh", ".list", ".log", ".cfg", ".gz", ".deb", ".h", ".c", "")
ROOTS = ("/etc", "/usr/share", "/usr/lib", "/usr/bin", "/var/lib", "/var/log", "/home", "/tmp", "~", ".")


def default_code_path() -> Path:
    return Path.home() / ".cache" / "ocrstream" / "data" / f"code-v{CODE_VERSION}.jsonl"


def _clean(line: str) -> str | None:
    # runs of spaces collapse first, so the length bounds hold for the line as stored
    t = re.sub(r"\s{2,}", " ", line.strip())
    if not (MIN_LEN <= len(t) <= MAX_LEN) or not t.isascii() or not t.isprintable():
        return None
    if '"""' in t or "'''" in t:  # docstring fences: prose the corpus already has
        return None
    return t


def iter_code_lines(root: Path | None = None) -> Iterator[Paragraph]:
    """(source, line) of the standard library's .py files, at most PER_FILE per file, in order."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        source = f"code:{path.relative_to(root).as_posix()}"
        kept = [t for t in map(_clean, lines) if t]
        step = max(1, len(kept) // PER_FILE)
        for t in kept[::step][:PER_FILE]:
            yield Paragraph(source, t)


def load_code_lines(path: Path | None = None) -> dict[str, list[Paragraph]]:
    """Code lines per corpus split; built on first use (a few seconds) and cached as JSONL."""
    path = path or default_code_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("w") as f:
            for p in iter_code_lines():
                f.write(json.dumps({"source": p.source, "split": split_of(p.source), "text": p.text}) + "\n")
        tmp.replace(path)
    out: dict[str, list[Paragraph]] = {}
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            out.setdefault(row["split"], []).append(Paragraph(row["source"], row["text"]))
    return out


def _words(paragraphs: list[Paragraph], rng: random.Random, k: int) -> list[str]:
    words = [w.strip(".,;:()\"'").lower() for w in rng.choice(paragraphs).text.split()]
    words = [w for w in words if w.isalpha() and 2 <= len(w) <= 12] or ["data", "file", "name"]
    return [rng.choice(words) for _ in range(k)]


def _path(rng: random.Random, words: list[str]) -> str:
    parts = [rng.choice(ROOTS)] + words[: rng.randint(1, 3)]
    sep = rng.choice(("-", "_", ".", ""))
    if sep and len(parts) > 2 and rng.random() < 0.4:
        parts[-2:] = [parts[-2] + sep + parts[-1]]
    return "/".join(parts) + rng.choice(EXTS)


def shell_line(paragraphs: list[Paragraph], rng: random.Random) -> str:
    """A command line, a path, or a ``name(8)`` list made of corpus words."""
    words = _words(paragraphs, rng, 8)
    r = rng.random()
    if r < 0.2:  # a path, alone or with a description
        return _path(rng, words) + (" " + " ".join(words[3:6]) if rng.random() < 0.5 else "")
    if r < 0.35:  # manual page references: "pam_env(8), logind.conf(5) and foo-bar(1)"
        refs = [
            f"{w}{rng.choice(('-', '_', '.', ''))}{v}({rng.randint(1, 8)})"
            for w, v in zip(words[::2], words[1::2], strict=False)
        ]
        return ", ".join(refs[: rng.randint(1, 4)])
    parts = [rng.choice(("$ ", "# ", "", "", ""))]
    if rng.random() < 0.3:
        parts.append("sudo ")
    parts.append(rng.choice(COMMANDS))
    for w in words[: rng.randint(1, 5)]:
        x = rng.random()
        if x < 0.25:
            parts.append(" " + rng.choice(OPTIONS))
        elif x < 0.45:
            parts.append(f" --{w}" + (f"={rng.choice(words)}" if rng.random() < 0.3 else ""))
        elif x < 0.65:
            parts.append(" " + _path(rng, words[3:]))
        elif x < 0.8:
            parts.append(f" {w}-{rng.choice(words)}")
        else:
            parts.append(f" {w}")
    if rng.random() < 0.15:
        parts.append(rng.choice((" \\", " | grep " + words[-1], " > " + _path(rng, words), " &&")))
    return "".join(parts)


_OPEN_BEFORE = set(" ([{<-\u2014\u2013/")


def smarten(text: str) -> str:
    """ASCII quotes -> typographic ones, as a typesetter would: a quote at the start or after a
    space or opening bracket opens, any other closes (an apostrophe is a closing single quote)."""
    out = []
    for i, c in enumerate(text):
        opens = i == 0 or text[i - 1] in _OPEN_BEFORE
        if c == '"':
            out.append("\u201c" if opens else "\u201d")
        elif c == "'":
            out.append("\u2018" if opens and i + 1 < len(text) and text[i + 1] != " " else "\u2019")
        else:
            out.append(c)
    return "".join(out)
