"""scripts/install_system.sh: the entry points install the system packages they need (fonts,
Tesseract, Chromium), only the missing ones, with one font list (ocrstream/data/fonts.py)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

from ocrstream.data import fonts

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install_system.sh"
GROUPS = {"tesseract": ["tesseract-ocr", "tesseract-ocr-eng"], "chromium": ["chromium"]}


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_groups_list_one_font_list():
    assert _run("--list", "fonts").stdout.split() == list(fonts.PACKAGES)
    for group, pkgs in GROUPS.items():
        assert _run("--list", group).stdout.split() == pkgs
    assert _run("--list", "all").stdout.split() == [
        *fonts.PACKAGES,
        *GROUPS["tesseract"],
        *GROUPS["chromium"],
    ]
    bad = _run("--check", "nope")
    assert bad.returncode == 2 and "unknown group 'nope'" in bad.stderr


def test_the_test_command_has_every_package_it_needs():
    """Fails on a machine where a package the suite needs is missing (scripts/test.sh installs them)."""
    check = _run(
        "--check", "fonts", "tesseract", "chromium", env={**os.environ, "OCRSTREAM_SKIP_SYSTEM_PACKAGES": "0"}
    )
    assert check.returncode == 0, check.stderr
    # With the fonts group installed, every face of the table is there (the list covers the table).
    assert {f.name for f in fonts.train_fonts()} == set(fonts._TRAIN)
    assert [f.name for f in fonts.heldout_fonts()] == [fonts.HELDOUT_FONT]
    tess = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, timeout=60)
    assert tess.returncode == 0 and "eng" in tess.stdout.split()
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not on PATH"
    ver = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=60)
    assert ver.returncode == 0 and "Chromium" in ver.stdout


def test_entry_points_install_their_groups():
    # The fresh-machine path: each entry point runs the installer before it needs the packages.
    calls = {
        "test.sh": "bash scripts/install_system.sh fonts tesseract chromium",
        "quickstart.sh": "bash scripts/install_system.sh fonts",
        "train_embedded.sh": "bash scripts/install_system.sh fonts",
    }
    for script, line in calls.items():
        text = (REPO / "scripts" / script).read_text()
        assert line in text, script
        if script != "train_embedded.sh":
            assert text.index("scripts/bootstrap.sh") < text.index(line)  # after the venv, before the work
    assert 'install_system.sh" fonts' in (REPO / "scripts" / "install_fonts.sh").read_text()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def _stub_bin(tmp_path: Path, installed: set[str], uid: int) -> dict[str, str]:
    """dpkg/apt-get/id stand-ins on PATH: the script's decisions (what to install, when to skip)
    without touching this machine's packages. apt-get records its arguments and then "installs"."""
    bin_dir, state = tmp_path / "bin", tmp_path / "installed"
    bin_dir.mkdir()
    state.write_text("\n".join(sorted(installed)) + "\n")
    (bin_dir / "dpkg").write_text(f'#!/bin/sh\n[ "$1" = -s ] && grep -qx "$2" {state}\n')
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/apt.log\n'
        f'[ "$1" = install ] && for a in "$@"; do case "$a" in -*|install) ;; *) echo "$a" >> {state};; esac; done\n'
        "exit 0\n"
    )
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OCRSTREAM_SKIP_SYSTEM_PACKAGES": "0"}


def test_installs_only_the_missing_packages_and_nothing_when_all_are_there(tmp_path):
    rng = random.Random(os.urandom(8))
    every = [*fonts.PACKAGES, *GROUPS["tesseract"], *GROUPS["chromium"]]
    missing = rng.sample(every, rng.randint(1, 5))
    env = _stub_bin(tmp_path, set(every) - set(missing), uid=0)
    check = _run("--check", "all", env=env)
    assert check.returncode == 1 and all(p in check.stderr for p in missing)
    assert not (tmp_path / "apt.log").exists()  # --check installs nothing
    r = _run("fonts", "tesseract", "chromium", env=env)
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "apt.log").read_text().splitlines()
    assert lines[0].startswith("update")
    assert lines[1].split() == [
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        *[p for p in every if p in missing],
    ]
    r = _run("fonts", "tesseract", "chromium", env=env)  # now all there: no apt-get at all
    assert r.returncode == 0 and len((tmp_path / "apt.log").read_text().splitlines()) == 2
    assert "all 20 packages installed" in r.stderr


def test_not_root_and_no_sudo_says_what_to_run(tmp_path):
    env = _stub_bin(tmp_path, set(), uid=1000)
    # PATH with the stubs and the few tools the script uses, so no sudo is found even where one exists.
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("sed", "grep", "tr", "dirname", "cat", "sh"):
        (tools / name).symlink_to(shutil.which(name))
    env["PATH"] = f"{tmp_path / 'bin'}:{tools}"
    r = subprocess.run(
        [shutil.which("bash"), str(SCRIPT), "tesseract"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 1 and "run as root: apt-get install tesseract-ocr tesseract-ocr-eng" in r.stderr, (
        r.stderr
    )
    assert not (tmp_path / "apt.log").exists()
