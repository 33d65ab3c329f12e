"""A real tritonserver (CPU, from the venv's nvidia-pytriton wheel) over a temporary model repository.

One server per session on free 127.0.0.1 ports in explicit model-control mode: tests write their
models (random tiny snapshots, generated config.pbtxt) into ``triton.model_repo`` under unique
names and load/unload them, so the whole session costs one server start. A server that cannot
start fails the test under ``CI=true`` and skips it elsewhere, with the log tail as the reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


class TritonHarness:
    def __init__(self, server, root: Path) -> None:  # noqa: ANN001
        import tritonclient.grpc as grpcclient

        self.server = server
        self.root = root
        self.model_repo = server.model_repo
        self.grpc_url = server.grpc_url
        self.client = grpcclient.InferenceServerClient(server.grpc_url)

    def load(self, names: list[str], timeout_s: float = 240.0) -> None:
        """Load models concurrently (each stub imports torch: seconds) and wait until each is ready."""
        from concurrent.futures import ThreadPoolExecutor

        import tritonclient.grpc as grpcclient

        def one(name: str) -> None:
            try:
                grpcclient.InferenceServerClient(self.grpc_url).load_model(name)
            except Exception as exc:  # surface the server log: it holds the model's traceback
                raise AssertionError(f"loading {name} failed: {exc}\n{self.server.log_tail(40)}") from exc

        deadline = time.monotonic() + timeout_s
        with ThreadPoolExecutor(len(names)) as pool:
            for f in [pool.submit(one, n) for n in names]:
                f.result()
        for name in names:
            while not self.client.is_model_ready(name):
                assert time.monotonic() < deadline, f"{name} not ready:\n{self.server.log_tail(40)}"
                time.sleep(0.2)

    def unload(self, names: list[str]) -> None:
        for name in names:
            self.client.unload_model(name)
        # Wait for the stub processes to go: the machine is small.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            index = {
                m["name"]: m.get("state", "")
                for m in self.client.get_model_repository_index(as_json=True).get("models", [])
            }
            if all(index.get(n) in ("UNAVAILABLE", "", None) for n in names):
                return
            time.sleep(0.2)


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHarness]:
    from ocrstream.serving.launcher import TritonLaunchError, TritonServer

    root = tmp_path_factory.mktemp("triton")
    (root / "repo").mkdir()
    server = TritonServer(root / "repo", root / "work")
    try:
        server.start()
    except TritonLaunchError as exc:
        if IN_CI:
            pytest.fail(f"tritonserver could not start under CI=true: {exc}", pytrace=False)
        pytest.skip(f"tritonserver could not start: {exc}")
    try:
        yield TritonHarness(server, root)
    finally:
        server.stop()


def _fresh_snapshot(tmp_path_factory: pytest.TempPathFactory, name: str, stops: bool = True):
    from tests.serving.helpers import fresh_seed, save_tiny_snapshot

    seed = fresh_seed()
    folder = tmp_path_factory.mktemp(name)
    save_tiny_snapshot(folder, seed, stops=stops)
    return folder, seed


@pytest.fixture(scope="session")
def tiny_snapshot(tmp_path_factory: pytest.TempPathFactory):
    """(folder, seed) of a fresh random tiny model saved with the model helper's save function."""
    return _fresh_snapshot(tmp_path_factory, "tiny-snapshot")


@pytest.fixture(scope="session")
def writing_snapshot(tmp_path_factory: pytest.TempPathFactory):
    """(folder, seed) of a fresh random tiny model that never picks end-of-text, so pages compared
    across backends always hold text (see ``save_tiny_snapshot``)."""
    return _fresh_snapshot(tmp_path_factory, "writing-snapshot", stops=False)
