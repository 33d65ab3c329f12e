"""ocrstream.validation: the door's mode grammar is bounded and agrees with model.modes.get_mode on
fresh random specs; prompts, file names and ids."""

from __future__ import annotations

import os
import random
import string

import pytest

from ocrstream import validation as v
from ocrstream.errors import NotFound, PermanentError
from ocrstream.model import modes, tokenizer


def _ok_side(side: int) -> bool:
    return v.MODE_SIDE_MIN <= side <= v.MODE_SIDE_MAX and side % v.MODE_SIDE_STEP == 0


def _random_side(rng: random.Random) -> int:
    pick = rng.randrange(4)
    if pick == 0:
        return rng.randrange(v.MODE_SIDE_MIN // 16, v.MODE_SIDE_MAX // 16 + 1) * 16  # valid
    if pick == 1:
        return rng.randint(1, 40_000)  # mostly invalid (20000: the example)
    if pick == 2:
        return rng.choice([0, 16, 48, 2064, 4096, 20000, 65536]) + rng.choice([0, 0, 1, 8])
    return rng.randrange(1, 200) * 16  # multiples of 16 on both sides of the bounds


def test_size_specs_are_bounded_and_agree_with_get_mode():
    rng = random.Random(os.urandom(8))
    for _ in range(2000):
        base, tile = _random_side(rng), _random_side(rng)
        kind = rng.randrange(3)
        spec = {0: f"{base}", 1: f"{base}x{tile}", 2: f"reflow-{base}"}[kind]
        expect = _ok_side(base) and (kind != 1 or _ok_side(tile))
        if rng.random() < 0.2:
            spec = spec.upper().replace("-", "_") if kind == 2 else spec
        if not expect:
            with pytest.raises(v.BadMode) as err:
                v.check_mode(spec)
            bad_side = tile if _ok_side(base) else base
            assert (
                err.value.reason == "bad_mode"
                and repr(spec) in str(err.value)
                and str(bad_side) in str(err.value)
            )
            continue
        key = v.check_mode(spec)
        m = modes.get_mode(key)  # whatever the door lets through, the model accepts as such
        assert (m.base_size, m.image_size) == ((base, tile) if kind == 1 else (base, base))
        assert m.crop == (kind == 1) and m.reflow == (kind == 2)
    assert pytest.raises(v.BadMode, v.check_mode, "20000").value.reason == "bad_mode"


def test_named_modes_and_lines_match_the_model():
    assert set(v.MODE_NAMES) == set(modes.MODES)
    for name in modes.MODES:
        assert v.check_mode(name.upper()) == name
    assert v.check_mode("default") == "default" and v.check_mode("AUTO") == "auto"
    for pct in range(0, 130):
        spec = f"lines-{pct}"
        try:
            modes.get_mode(spec)
            model_ok = True
        except ValueError:
            model_ok = False
        if model_ok:
            assert modes.get_mode(v.check_mode(spec)) == modes.get_mode(spec)
        else:
            with pytest.raises(v.BadMode):
                v.check_mode(spec)
    assert v.check_mode("lines") == "lines"


def test_garbage_modes_are_bad_mode_never_another_error():
    rng = random.Random(os.urandom(8))
    alphabet = string.ascii_letters + string.digits + "-_x./\\ \x00\n<>é"
    for _ in range(1000):
        spec = "".join(rng.choices(alphabet, k=rng.randint(0, 40)))
        try:
            key = v.check_mode(spec)
        except v.BadMode:
            continue
        # Accepted: a name, or a spec get_mode takes; either way no path characters get through.
        assert set(key) <= set(string.ascii_lowercase + string.digits + "-x")
        if key not in v.SPECIAL_MODES:
            modes.get_mode(key)
    for bad in ("../../etc", "base/../x", "tiny\x00", "", "   ", "x" * 33, "1024x", "reflow-", "lines-5"):
        with pytest.raises(v.BadMode):
            v.check_mode(bad)


def test_prompts_names_and_raw():
    # Every name the model's tokenizer resolves without extra fields, and only those.
    plain = {n for n, t in tokenizer.PROMPTS.items() if "{" not in t}
    assert set(v.PROMPT_NAMES) == plain
    rng = random.Random(os.urandom(8))
    for name in plain:
        assert v.check_prompt(name) == name
    words = " ".join("".join(rng.choices(string.ascii_letters, k=5)) for _ in range(rng.randint(1, 20)))
    raw = f"{v.IMAGE_TAG}\n{words}"
    assert v.check_prompt(raw) == raw and tokenizer.resolve_prompt(raw) == raw
    for bad, why in (
        (words, "exactly one <image>"),
        (f"{v.IMAGE_TAG}{v.IMAGE_TAG}{words}", "it has 2"),
        (f"{v.IMAGE_TAG}" + "a" * v.MAX_RAW_PROMPT_CHARS, "at most"),
        ("locate", "exactly one <image>"),  # needs ref=..., which a page job cannot give
        ("", "empty"),
    ):
        with pytest.raises(v.BadPrompt, match=why) as err:
            v.check_prompt(bad)
        assert err.value.reason == "bad_prompt"


def test_filenames_ids_and_token_budgets():
    rng = random.Random(os.urandom(8))
    name = "inbox/" + "".join(rng.choices(string.ascii_letters, k=12)) + ".pdf"
    assert v.check_filename(name) == name
    for bad in ("", "a\nb.pdf", "x\x00.pdf", "a" * (v.MAX_FILENAME_CHARS + 1)):
        with pytest.raises(PermanentError) as err:
            v.check_filename(bad)
        assert err.value.reason == "bad_filename"
    doc = os.urandom(16).hex()
    job = f"{doc[:24]}-reflow-256-{os.urandom(4).hex()}"
    assert v.check_job_id(job) == job and v.check_job_id(doc, allow_doc_id=True) == doc
    for bad in (doc, "../../jobs/x", "unknown", job + "/..", job.upper()):
        with pytest.raises(NotFound):
            v.check_job_id(bad)
    assert v.check_max_new_tokens(256) == 256
    for bad in (0, -1, v.MAX_NEW_TOKENS + 1, True, 1.5):
        with pytest.raises(PermanentError):
            v.check_max_new_tokens(bad)


def test_the_checks_work_without_torch():
    """The ingest image has no torch: the door's grammar decides alone there, with the same answers."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # import torch -> ImportError
        "from ocrstream import validation as v\n"
        "import ocrstream.services.ingest.main, ocrstream.cli.topics_cmds\n"
        "assert v._modes() is None\n"
        "assert [v.check_mode(m) for m in ('Reflow_256', '1024x640', 'GUNDAM-M', 'lines-50')] == "
        "['reflow-256', '1024x640', 'gundam-m', 'lines-50']\n"
        "for bad in ('20000', '1024x4096', 'reflow-2064', 'huge'):\n"
        "    try:\n"
        "        v.check_mode(bad)\n"
        "    except v.BadMode:\n"
        "        continue\n"
        "    raise SystemExit('accepted ' + bad)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), r.stderr[-2000:]
