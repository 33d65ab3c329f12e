"""Request fields checked at the door: the ingest API, the reference topic, the bucket/folder
sources and ``ocrstream submit`` all go through these before anything is stored or published.

A bad field is a ``PermanentError`` with a stable reason (``bad_mode``, ``bad_prompt``,
``bad_request``): HTTP 400 with the message at the API, a dead letter on the topic, never a retry.

Modes: the names of ``ocrstream.model.modes.MODES``, ``default`` (the checkpoint's own), ``auto``
(chosen per page), ``lines`` / ``lines-<percent>`` and, bounded here, the size specs ``<side>``,
``<base>x<tile>`` and ``reflow-<side>`` with every side a multiple of 16 in
``MODE_SIDE_MIN..MODE_SIDE_MAX`` (``get_mode`` itself accepts any side: ``mode=20000`` would ask
SAM for a 20000-px view). The ingest image carries no torch, so the grammar is spelled out here;
where ``ocrstream.model.modes`` imports, ``get_mode`` must accept the mode as well
(tests/core/test_validation.py keeps the two in step on fresh random specs).
"""

from __future__ import annotations

import re
from types import ModuleType

from ocrstream.errors import NotFound, PermanentError

MODE_SIDE_MIN = 64
MODE_SIDE_MAX = 2048  # = the rasterizer's default long-side cap (OCRSTREAM_RASTERIZER_MAX_SIDE)
MODE_SIDE_STEP = 16  # SAM's patch size
LINES_PCT = (10, 100)  # the lines rung's width percentage (modes.get_mode's bounds)
# ocrstream.model.modes.MODES, mirrored for roles without torch.
MODE_NAMES = ("tiny", "small", "base", "large", "gundam", "gundam-m")
SPECIAL_MODES = ("default", "auto")

# ocrstream.model.tokenizer.PROMPTS that need no extra fields, mirrored for roles without it.
PROMPT_NAMES = ("free_ocr", "markdown", "grounding", "ocr", "figure", "describe", "identify")
IMAGE_TAG = "<image>"
MAX_RAW_PROMPT_CHARS = 2000
MAX_FILENAME_CHARS = 1024  # S3's key length limit
MAX_NEW_TOKENS = 8192  # decode budget a request may ask for

_SIZE = re.compile(r"(\d{1,6})(?:x(\d{1,6}))?")
_REFLOW = re.compile(r"reflow-(\d{1,6})")
_LINES = re.compile(r"lines(?:-(\d{1,3}))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
JOB_ID = re.compile(r"[0-9a-f]{24}-[a-z0-9][a-z0-9-]{0,31}-[0-9a-f]{8}")
DOC_ID = re.compile(r"[0-9a-f]{32}")


class BadRequest(PermanentError):
    reason = "bad_request"


class BadMode(BadRequest):
    reason = "bad_mode"


class BadPrompt(BadRequest):
    reason = "bad_prompt"


def _modes() -> ModuleType | None:
    try:
        from ocrstream.model import modes
    except ImportError:  # a role without torch: the grammar below decides alone
        return None
    return modes


def _side(mode: str, what: str, raw: str) -> int:
    side = int(raw)
    if not (MODE_SIDE_MIN <= side <= MODE_SIDE_MAX and side % MODE_SIDE_STEP == 0):
        raise BadMode(
            f"mode {mode!r}: {what} {side} px is not a multiple of {MODE_SIDE_STEP} in "
            f"{MODE_SIDE_MIN}..{MODE_SIDE_MAX}"
        )
    return side


def check_mode(mode: str) -> str:
    """The canonical spelling of a request's ``mode`` (lower case, '-' not '_'); raises BadMode."""
    if not isinstance(mode, str) or not mode.strip():
        raise BadMode(f"mode {mode!r}: empty")
    if len(mode) > 32:
        raise BadMode(f"mode {mode[:40]!r}...: longer than 32 characters")
    key = mode.strip().lower().replace("_", "-")
    if key in SPECIAL_MODES:
        return key
    known = (
        f"known: {', '.join(MODE_NAMES + SPECIAL_MODES)}, lines, lines-<{LINES_PCT[0]}..{LINES_PCT[1]}>, "
        f"<side>, <base>x<tile> or reflow-<side> with sides multiples of {MODE_SIDE_STEP} in "
        f"{MODE_SIDE_MIN}..{MODE_SIDE_MAX}"
    )
    if key in MODE_NAMES:
        pass
    elif (m := _LINES.fullmatch(key)) is not None:
        pct = int(m.group(1) or 100)
        if not LINES_PCT[0] <= pct <= LINES_PCT[1]:
            raise BadMode(
                f"mode {mode!r}: the lines width percentage must be in {LINES_PCT[0]}..{LINES_PCT[1]}"
            )
    elif (m := _REFLOW.fullmatch(key)) is not None:
        _side(mode, "view side", m.group(1))
    elif (m := _SIZE.fullmatch(key)) is not None:
        _side(mode, "global view side", m.group(1))
        if m.group(2) is not None:
            _side(mode, "tile side", m.group(2))
        key = "x".join(str(int(g)) for g in m.groups() if g is not None)  # "0512" -> "512"
    else:
        raise BadMode(f"unknown mode {mode!r}; {known}")
    modes = _modes()
    if modes is not None:
        try:
            modes.get_mode(key)
        except ValueError as exc:
            raise BadMode(f"mode {mode!r}: {exc}") from exc
    return key


def check_prompt(prompt: str) -> str:
    """A prompt name or a raw prompt with exactly one ``<image>``; raises BadPrompt."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadPrompt(f"prompt {prompt!r}: empty")
    if prompt in PROMPT_NAMES:
        return prompt
    if len(prompt) > MAX_RAW_PROMPT_CHARS:
        raise BadPrompt(f"raw prompt of {len(prompt)} characters; at most {MAX_RAW_PROMPT_CHARS}")
    if "\x00" in prompt:
        raise BadPrompt("raw prompt contains a NUL character")
    n = prompt.count(IMAGE_TAG)
    if n != 1:
        raise BadPrompt(
            f"prompt {prompt[:80]!r} is neither a known name ({', '.join(PROMPT_NAMES)}) nor a raw prompt "
            f"with exactly one {IMAGE_TAG} (it has {n})"
        )
    return prompt


def check_filename(name: str) -> str:
    """A document's display name (an upload's file name, a bucket key): at most
    MAX_FILENAME_CHARS, no control characters. It is metadata only, never a path here."""
    if not isinstance(name, str) or not name.strip():
        raise BadRequest(f"filename {name!r}: empty", reason="bad_filename")
    if len(name) > MAX_FILENAME_CHARS or _CONTROL.search(name):
        raise BadRequest(
            f"filename {name[:80]!r}: more than {MAX_FILENAME_CHARS} characters or control characters",
            reason="bad_filename",
        )
    return name


def check_job_id(job_id: str, allow_doc_id: bool = False) -> str:
    """A job id (``<doc[:24]>-<mode>-<prompt hash>``) or, with ``allow_doc_id``, a document id.
    Anything else names no job (NotFound) and never reaches a store key."""
    if isinstance(job_id, str) and (JOB_ID.fullmatch(job_id) or (allow_doc_id and DOC_ID.fullmatch(job_id))):
        return job_id
    what = "a job id or document id" if allow_doc_id else "a job id"
    raise NotFound(f"no job {str(job_id)[:80]!r} (not {what})")


def check_max_new_tokens(n: int, limit: int = MAX_NEW_TOKENS) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise BadRequest(f"max new tokens {n!r} not in 1..{limit}")
    return n
