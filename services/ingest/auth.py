"""API keys of the ingest API: required unless the dev flag is set, compared in constant time.

``ApiKeys.dependency`` is a FastAPI dependency for any router mounted on the ingest app
(``app.include_router(r, dependencies=[Depends(app.state.api_keys.dependency)])``); ``ApiKeyGate``
checks the same keys in front of the app for the given path prefixes, so an upload without a
valid key is refused before its body is read (FastAPI parses a form before it runs dependencies).
A key comes as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (what OpenAI clients send).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="an ingest API key")
_BEARER = HTTPBearer(auto_error=False, description="an ingest API key as a bearer token")
UNAUTHORIZED = {"reason": "unauthorized", "detail": "missing or unknown API key (X-API-Key or Bearer)"}


class ApiKeys:
    def __init__(self, keys: Iterable[str], dev_open: bool = False) -> None:
        self._keys = tuple(k.encode() for k in keys if k)
        if not self._keys and not dev_open:
            raise ValueError(
                "the ingest API has no API keys: set OCRSTREAM_INGEST_API_KEYS (comma-separated), or "
                "OCRSTREAM_INGEST_DEV_OPEN=1 to serve it open for local development"
            )
        self.open = not self._keys  # only reachable with dev_open

    def accepts(self, key: str | None) -> bool:
        if self.open:
            return True
        if not key:
            return False
        given = key.encode()
        # Every key is compared (no early exit), each in constant time.
        return sum(hmac.compare_digest(given, k) for k in self._keys) > 0

    def accepts_headers(self, x_api_key: str | None, authorization: str | None) -> bool:
        if x_api_key is not None:
            return self.accepts(x_api_key)
        if authorization and authorization[:7].lower() == "bearer ":
            return self.accepts(authorization[7:].strip())
        return self.accepts(None)

    def dependency(
        self,
        x_api_key: str | None = Security(_HEADER),
        bearer: HTTPAuthorizationCredentials | None = Security(_BEARER),
    ) -> None:
        auth = f"Bearer {bearer.credentials}" if bearer is not None else None
        if not self.accepts_headers(x_api_key, auth):
            raise HTTPException(401, detail=UNAUTHORIZED)


class ApiKeyGate:
    """ASGI middleware: 401 for requests under ``prefixes`` without a valid key, body unread."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, prefixes: tuple[str, ...]) -> None:
        self.app, self.keys, self.prefixes = app, keys, prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.keys.open and scope["path"].startswith(self.prefixes):
            h = Headers(scope=scope)
            if not self.keys.accepts_headers(h.get("x-api-key"), h.get("authorization")):
                body = json.dumps({"detail": UNAUTHORIZED}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
