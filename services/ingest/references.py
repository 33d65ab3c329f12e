"""Remote document references in API requests (``s3://bucket/key``, ``http(s)://...``): the
allow-list check and the capped fetch.

The OpenAI-compatible endpoint takes image URLs; fetching any URL a client names would let it reach
whatever the ingest pod can (cloud metadata, internal services, every bucket of the credentials).
So every reference passes ``ReferencePolicy.check`` first, and again on each HTTP redirect. The
default policy refuses all references. S3 buckets are the reference topic's allow-list
(``OCRSTREAM_INGEST_REF_BUCKETS``) and are fetched by the same ``sources.make_fetcher`` (size cap,
error mapping); local paths are never read from a request. HTTP(S) URLs must start with one of
``OCRSTREAM_INGEST_REF_HTTP_PREFIXES``.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from ocrstream.errors import OversizedDocument, PermanentError
from ocrstream.services.ingest.sources import make_fetcher

SCHEMES = ("http://", "https://", "s3://")


class ForbiddenReference(PermanentError):
    reason = "reference_not_allowed"


class FetchFailed(PermanentError):
    reason = "fetch_failed"


@dataclass(frozen=True)
class ReferencePolicy:
    """What a request may reference; empty = nothing (the safe default)."""

    buckets: tuple[str, ...] = ()  # s3:// buckets
    http_prefixes: tuple[str, ...] = ()  # URL prefixes, e.g. "https://docs.example.com/scans/"

    def check(self, uri: str) -> None:
        if uri.startswith("s3://"):
            bucket = uri[5:].partition("/")[0]
            if bucket not in self.buckets:
                raise ForbiddenReference(
                    f"reference {uri[:200]!r}: bucket {bucket!r} is not in the ingest allow-list"
                )
            return
        if not uri.startswith(SCHEMES):
            raise ForbiddenReference(f"reference {uri[:80]!r}: only http(s):// and s3:// are fetched")
        # Compare normalised forms so "HTTPS://Host/a/../b" cannot slip past a prefix match.
        norm = _normalise(uri)
        if not any(_under(norm, _normalise(p)) for p in self.http_prefixes):
            raise ForbiddenReference(f"reference {uri[:200]!r} is not in the ingest allow-list")


def _under(uri: str, prefix: str) -> bool:
    # A prefix without a trailing slash still ends at a boundary: "https://a.com" must not allow
    # "https://a.com.evil.net/".
    return uri == prefix or uri.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _normalise(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    path = urllib.parse.unquote(parts.path)
    if "/../" in f"{path}/" or "/./" in f"{path}/":
        raise ForbiddenReference(f"reference {uri[:200]!r}: dot segments are not accepted")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, policy: ReferencePolicy) -> None:
        self.policy = policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        self.policy.check(newurl)  # a redirect must not leave the allow-list
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_reference(
    uri: str, policy: ReferencePolicy, max_bytes: int, s3_client: Any = None, timeout_s: float = 30.0
) -> bytes:
    """The bytes behind an allowed reference; OversizedDocument past ``max_bytes`` (read no further)."""
    policy.check(uri)
    if uri.startswith("s3://"):
        return make_fetcher(s3_client, roots=(), buckets=policy.buckets, max_bytes=max_bytes)(uri)
    opener = urllib.request.build_opener(_CheckedRedirects(policy))
    try:
        with opener.open(urllib.request.Request(uri, method="GET"), timeout=timeout_s) as resp:
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise FetchFailed(f"{uri}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchFailed(f"{uri}: {exc}") from exc
    if len(data) > max_bytes:
        raise OversizedDocument(f"{uri}: more than {max_bytes} bytes")
    return data
