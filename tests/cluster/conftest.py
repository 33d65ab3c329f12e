"""A stand-in Kubernetes API server at the HTTP boundary, serving objects the chart really renders,
so ocrstream.cluster.k8s runs through the real `kubernetes` client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

# tests/ is on sys.path (rootdir conftest, no __init__.py there), so the chart helpers import as `charts`.
from charts.helmlib import CHART, ensure_helm, load_values, render


class FakeApi:
    """Objects by list path; records each request's path and label selector."""

    def __init__(self) -> None:
        self.lists: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                selector = parse_qs(url.query).get("labelSelector", [None])[0]
                api.requests.append((url.path, selector))
                if url.path not in api.lists:
                    body, code = (
                        {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404},
                        404,
                    )
                else:
                    items = [o for o in api.lists[url.path] if _selected(o, selector)]
                    body, code = {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}, 200
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _selected(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in (term.split("=", 1) for term in selector.split(",")))


@pytest.fixture(scope="session")
def chart_objects() -> dict[str, list[dict[str, Any]]]:
    """Default-scenario objects rendered by the chart, by kind."""
    rendered = render(ensure_helm(), load_values(CHART / "ci" / "default-values.yaml"))
    out: dict[str, list[dict[str, Any]]] = {}
    for o in rendered.objects:
        out.setdefault(o["kind"], []).append(o)
    return out


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
