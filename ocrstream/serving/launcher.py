"""Start and stop a real ``tritonserver`` on 127.0.0.1 from the nvidia-pytriton wheel of this venv.

Used by tests/serving/conftest.py and bench/triton_decoder.py for their own temporary model
repositories (the dev server of ``scripts/infra/triton.sh`` serves ``model_repo/`` at fixed ports).
The set-up follows cpu-runtime-notes §1: a backend folder holding three symlinks (the stub keeps its
RPATH), ``PATH`` starting with the venv's ``bin`` (the stub finds its prefix, hence ``ocrstream``),
``LD_LIBRARY_PATH`` = the interpreter's shared-lib dir, explicit model control.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class TritonLaunchError(RuntimeError):
    """tritonserver could not be started or did not become ready; carries the log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wheel_paths() -> tuple[Path, Path]:
    """(tritonserver binary, python-backend stub) shipped in the venv's nvidia-pytriton wheel."""
    home = Path(sysconfig.get_paths()["purelib"]) / "pytriton" / "tritonserver"
    server = home / "bin" / "tritonserver"
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / ver / "triton_python_backend_stub"
    for p in (server, stub):
        if not p.exists():
            raise TritonLaunchError(f"{p} not found: install the project's [triton] extra (nvidia-pytriton)")
    return server, stub


def make_backend_dir(root: Path) -> Path:
    """``root/backends/python`` with symlinks to the wheel's python backend and stub."""
    _, stub = wheel_paths()
    src = stub.parent.parent.parent / "backends" / "python"
    bdir = root / "backends" / "python"
    bdir.mkdir(parents=True, exist_ok=True)
    for target, name in (
        (src / "libtriton_python.so", "libtriton_python.so"),
        (src / "triton_python_backend_utils.py", "triton_python_backend_utils.py"),
        (stub, "triton_python_backend_stub"),
    ):
        link = bdir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return root / "backends"


@dataclass
class TritonServer:
    """One tritonserver process over ``model_repo`` in explicit model-control mode."""

    model_repo: Path
    work_dir: Path
    load: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "tritonserver.log"

    def start(self, timeout_s: float = 180.0) -> TritonServer:
        server, _ = wheel_paths()
        if not Path(self.model_repo).is_dir():
            raise TritonLaunchError(f"model repository {self.model_repo} is not a folder")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        backends = make_backend_dir(self.work_dir)
        self.http_port = self.http_port or free_port(self.host)
        self.grpc_port = self.grpc_port or free_port(self.host)
        self.metrics_port = self.metrics_port or free_port(self.host)
        venv_bin = str(Path(sys.executable).parent)
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env.update(
            PATH=f"{venv_bin}:{env.get('PATH', '')}",
            LD_LIBRARY_PATH=":".join(x for x in (libdir, env.get("LD_LIBRARY_PATH", "")) if x),
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        )
        env.update(self.env)
        cmd = [
            str(server),
            f"--model-repository={self.model_repo}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in self.load],
            "--exit-on-error=false",
            "--strict-readiness=false",
            "--exit-timeout-secs=15",
            "--log-verbose=0",
        ]
        logf = self.log_path.open("ab")
        # Own session: stopping it never signals the test runner's process group.
        self.proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        logf.close()
        self._wait_ready(timeout_s)
        log.info("tritonserver pid %d ready: http %s grpc %s", self.proc.pid, self.http_url, self.grpc_url)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import tritonclient.http as httpclient

        deadline = time.monotonic() + timeout_s
        client = httpclient.InferenceServerClient(self.http_url, connection_timeout=2.0)
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise TritonLaunchError(f"tritonserver exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if client.is_server_live():
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.3)
        self.stop()
        raise TritonLaunchError(f"tritonserver not live after {timeout_s:.0f}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver pid %d ignored SIGTERM for %.0fs; killing it", self.proc.pid, timeout_s)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
