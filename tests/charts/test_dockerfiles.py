"""Static checks of docker/*.Dockerfile (no Docker engine here): pinned bases, multi-stage,
non-root, read-only-root friendly, role extras without torch where they must not have it."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from .helmlib import CHART, REPO

DOCKER = REPO / "docker"
SERVICES = {
    "ingest": "ingest",
    "rasterizer": "rasterizer",
    "encoder-cpu": "encoder",
    "encoder-cuda": "encoder",
    "decoder": "decoder",
    "assembler": "assembler",
}
NO_TORCH = ("ingest", "rasterizer", "assembler")


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, op: str) -> list[str]:
        return [a for o, a in self.instructions if o == op]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Instructions of each stage, continuation lines joined, comments dropped; ARG defaults resolved."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    )
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        op, _, rest = line.strip().partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        elif not stages:
            assert op == "ARG", f"{path.name}: {op} before the first FROM"
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((op, rest))
    return global_args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for arg in stage.args("ENV"):
        for token in shlex.split(arg):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def expand_extras(extras: set[str]) -> set[str]:
    """Requirement names an `ocrstream[...]` install pulls in, following self-references."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    reqs, todo, seen = set(project["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        assert extra in optional, f"extra {extra!r} is not in pyproject.toml"
        if extra in seen:
            continue
        seen.add(extra)
        for req in optional[extra]:
            m = re.match(r"ocrstream\[([^\]]+)\]", req)
            if m:
                todo += m.group(1).split(",")
            else:
                reqs.add(req)
    return {re.split(r"[\[<>=! ;]", r, maxsplit=1)[0].lower() for r in reqs}


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    for pat in patterns:
        if fnmatch.fnmatch(path, pat) or (
            pat.startswith("**/") and fnmatch.fnmatch(path.split("/")[-1], pat[3:])
        ):
            return True
        if path == pat or path.startswith(pat.rstrip("/") + "/"):
            return True
    return False


def test_one_dockerfile_per_service_and_variant() -> None:
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKER.glob("*.Dockerfile")} == set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dockerfile(name: str) -> None:
    path = DOCKER / f"{name}.Dockerfile"
    text = path.read_text()
    _, stages = parse(path)
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    aliases = {s.alias for s in stages if s.alias}
    for stage in stages:
        if stage.base in aliases:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert "@sha256:" in stage.base or (image and re.search(r"\d", tag)), f"unpinned base {stage.base}"
        assert tag != "latest"
    assert not re.search(r"[:=]latest\b", text), "no `latest` anywhere"

    final = stages[-1]
    (user,) = final.args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"runs as {user}"
    # The chart's pod security context must match the image's user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["podSecurityContext"]["runAsUser"]
    env = env_of(final)
    assert env["HOME"] == "/var/lib/ocrstream" and env["TMPDIR"] == "/tmp"
    volumes = {v for arg in final.args("VOLUME") for v in re.findall(r'"([^"]+)"', arg)}
    assert {"/tmp", env["HOME"]} <= volumes, "writable paths are volumes (read-only root filesystem)"

    patterns = dockerignore()
    for stage in stages:
        for arg in stage.args("COPY"):
            if "--from=" in arg:
                continue
            sources = [t for t in shlex.split(arg) if not t.startswith("--")][:-1]
            for src in sources:
                assert (REPO / src).exists(), f"COPY {src}: missing in the repo"
                assert not ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"

    installs = re.findall(
        r"(?:\.|ocrstream)\[([a-z,]+)\]", " ".join(a for s in stages for a in s.args("RUN"))
    )
    extras = {e for group in installs for e in group.split(",")}
    assert SERVICES[name] in extras, f"installs the {SERVICES[name]!r} role extra"
    if SERVICES[name] in NO_TORCH:
        assert "torch" not in expand_extras(extras), "this role's extras pull in torch"
        instructions = " ".join(a for s in stages for _, a in s.instructions).lower()
        assert "torch" not in instructions

    entry = " ".join(final.args("ENTRYPOINT") + final.args("CMD"))
    if name == "decoder":
        assert "tritonserver" in entry
    else:
        module = f"ocrstream.services.{SERVICES[name]}.main"
        assert module in entry
        assert (REPO / "services" / SERVICES[name] / "main.py").exists()


def test_decoder_image_is_triton_with_the_model_repository() -> None:
    _, stages = parse(DOCKER / "decoder.Dockerfile")
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", stages[-1].base)
    copies = [shlex.split(a) for a in stages[-1].args("COPY")]
    assert any("model_repo" in c and c[-1] == "/opt/ocrstream/model_repo" for c in copies)
    # The chart rewrites the repository for its shard count with the same writer that made model_repo/.
    assert "ocrstream.serving.repo" in (CHART / "templates" / "decoder" / "decoder.yaml").read_text()
    assert (
        "python -m ocrstream.serving.repo model_repo"
        in (REPO / "model_repo" / "ocr_decoder" / "config.pbtxt").read_text()
    )


def test_encoder_variants() -> None:
    _, cpu = parse(DOCKER / "encoder-cpu.Dockerfile")
    _, cuda = parse(DOCKER / "encoder-cuda.Dockerfile")
    assert "whl/cpu" in (DOCKER / "encoder-cpu.Dockerfile").read_text()
    assert cuda[-1].base.startswith("nvidia/cuda:") and "runtime" in cuda[-1].base
    assert env_of(cpu[-1])["OCRSTREAM_DEVICE"] == "cpu"
    assert env_of(cuda[-1])["OCRSTREAM_DEVICE"] == "cuda"


def test_dockerignore_keeps_the_build_inputs_out_of_the_noise() -> None:
    patterns = dockerignore()
    for needed in (
        "pyproject.toml",
        "setup.py",
        "README.md",
        "ocrstream",
        "ocrstream/assets",
        "services",
        "kernels",
        "model_repo",
    ):
        assert not ignored(needed, patterns), needed
    for noise in (".venv", ".git", "tests", "ocrstream/__pycache__", "services/x/__pycache__"):
        assert ignored(noise, patterns), noise


def test_torch_roles_do_pull_torch() -> None:
    # Guards the check above: the same expansion does find torch where it belongs.
    assert "torch" in expand_extras({"encoder"})
    assert "torch" not in expand_extras({"ingest"})


def test_wheel_carries_what_the_images_run(tmp_path: Path) -> None:
    """The images `pip install .[role]`: the wheel must hold the services, the repository writer and
    every shipped asset (the embedded model), or a container starts without them."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # Build from a copy of exactly what the Dockerfiles COPY (setuptools writes build/ in the source tree).
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("ocrstream", "services", "kernels"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        str(src),
        "-w",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=src)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("ocrstream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for service in ("ingest", "rasterizer", "encoder", "decoder", "assembler"):
        assert f"ocrstream/services/{service}/main.py" in names
    assert "ocrstream/serving/repo.py" in names
    assets = REPO / "ocrstream" / "assets"
    shipped = {
        p.relative_to(REPO).as_posix()
        for p in assets.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert shipped, "no assets found"
    assert shipped - names == set()
