"""Typed, versioned messages: one dataclass per topic, its topic name beside it.

Records are keyed by document id (so every page of a document lands on one partition and one
assembler), values are JSON, and headers carry the W3C trace context plus ``schema-version`` and
``message-type``. Large payloads never travel through Kafka: page images and vision tokens are
store keys (MinIO / local folder) or cache keys (Redis), only OCR text travels inline.

A reader accepts any record whose schema version is <= its own (fields added later are ignored,
fields missing get their defaults); a newer major version is an ``InvalidMessage``.

Records kept in the store rather than on a topic (``TokenRecord``) are the same typed messages,
written with ``to_record`` (their schema version and type inside the JSON, as there are no headers)
and read with ``from_record``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, get_type_hints

from ocrstream.errors import InvalidMessage

M = TypeVar("M", bound="Message")

HEADER_SCHEMA = "schema-version"
HEADER_TYPE = "message-type"
RECORD_SCHEMA = "schema_version"  # the header's counterparts inside a stored record
RECORD_TYPE = "message_type"

# Prompts known by name (model tokenizer); anything else is passed as a raw prompt string.
PROMPTS = ("markdown", "free_ocr", "grounding")


@dataclass(frozen=True)
class Message:
    TOPIC: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    @property
    def key(self) -> str:
        return getattr(self, "doc_id", "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (HEADER_SCHEMA, str(self.SCHEMA_VERSION).encode()),
            (HEADER_TYPE, type(self).__name__.encode()),
        ]

    @classmethod
    def from_dict(cls: type[M], raw: Any, schema_version: int | None = None) -> M:
        if schema_version is not None and schema_version > cls.SCHEMA_VERSION:
            raise InvalidMessage(
                f"{cls.__name__}: schema version {schema_version} is newer than {cls.SCHEMA_VERSION}",
                reason="schema_version",
            )
        if not isinstance(raw, dict):
            raise InvalidMessage(f"{cls.__name__}: expected a JSON object, got {type(raw).__name__}")
        hints = get_type_hints(cls)
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise InvalidMessage(f"{cls.__name__}: missing field {f.name!r}")
                continue
            kw[f.name] = _check(cls.__name__, f.name, raw[f.name], hints[f.name])
        msg = cls(**kw)
        msg.validate()
        return msg

    @classmethod
    def from_bytes(cls: type[M], data: bytes, headers: list[tuple[str, bytes]] | None = None) -> M:
        version = None
        for k, v in headers or ():
            if k == HEADER_SCHEMA:
                try:
                    version = int(v.decode())
                except (ValueError, UnicodeDecodeError) as exc:
                    raise InvalidMessage(f"{cls.__name__}: bad {HEADER_SCHEMA} header {v!r}") from exc
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidMessage(f"{cls.__name__}: value is not JSON: {data[:80]!r}") from exc
        return cls.from_dict(raw, version)

    def to_record(self) -> dict[str, Any]:
        """The JSON object to store: the fields plus schema version and type."""
        return {RECORD_SCHEMA: self.SCHEMA_VERSION, RECORD_TYPE: type(self).__name__, **self.to_dict()}

    @classmethod
    def from_record(cls: type[M], raw: Any) -> M:
        """A stored record back; one written before records carried a version counts as version 1."""
        if not isinstance(raw, dict):
            raise InvalidMessage(f"{cls.__name__}: expected a JSON object, got {type(raw).__name__}")
        kind = raw.get(RECORD_TYPE, cls.__name__)
        if kind != cls.__name__:
            raise InvalidMessage(f"{cls.__name__}: the stored record is a {kind}")
        version = raw.get(RECORD_SCHEMA, 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidMessage(f"{cls.__name__}: bad {RECORD_SCHEMA} {version!r}")
        return cls.from_dict(raw, version)

    def validate(self) -> None:
        page = getattr(self, "page", None)
        n_pages = getattr(self, "n_pages", None)
        if page is not None and n_pages is not None and not (1 <= page <= n_pages):
            raise InvalidMessage(f"{type(self).__name__}: page {page} outside 1..{n_pages}")
        if hasattr(self, "doc_id") and not self.doc_id:
            raise InvalidMessage(f"{type(self).__name__}: empty doc_id")


def _check(cls: str, name: str, value: Any, typ: Any) -> Any:
    origin = getattr(typ, "__origin__", typ)
    ok = {
        str: isinstance(value, str),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        list: isinstance(value, list),
        dict: isinstance(value, dict),
    }.get(origin, True)
    if not ok:
        raise InvalidMessage(
            f"{cls}.{name}: expected {getattr(origin, '__name__', origin)}, got {value!r}"[:300]
        )
    return float(value) if origin is float else value


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class DocumentRef(Message):
    """A reference to a document to ingest (the ``refs`` topic): ``s3://bucket/key`` or a local path."""

    TOPIC: ClassVar[str] = "document.refs"
    uri: str
    mode: str = ""
    prompt: str = ""

    @property
    def key(self) -> str:
        return self.uri

    def validate(self) -> None:
        if not self.uri:
            raise InvalidMessage("DocumentRef: empty uri")


@dataclass(frozen=True)
class DocumentSubmitted(Message):
    TOPIC: ClassVar[str] = "document.submitted"
    job_id: str
    doc_id: str
    source_key: str  # store key of the original bytes
    filename: str
    mode: str
    prompt: str
    size_bytes: int = 0
    submitted_at: float = field(default_factory=_now)


@dataclass(frozen=True)
class PageRasterized(Message):
    TOPIC: ClassVar[str] = "page.rasterized"
    job_id: str
    doc_id: str
    page: int  # 1-based
    n_pages: int
    image_key: str  # store key of the PNG
    image_hash: str  # sha256 of the PNG bytes: the cache key's content part
    mode: str
    prompt: str
    text_layer_key: str = ""  # store key of the PDF text layer of this page ("" = none)
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class PageEncoded(Message):
    TOPIC: ClassVar[str] = "page.encoded"
    job_id: str
    doc_id: str
    page: int
    n_pages: int
    tokens_key: str  # durable store key of the vision tokens (cache key = same string)
    image_key: str
    image_hash: str
    mode: str
    prompt: str
    weights_id: str
    text_layer_key: str = ""
    n_vision_tokens: int = 0
    cache_hit: bool = False
    encode_ms: float = 0.0
    # False for re-decodes: the decoder may use cached tokens of other modes but never run the
    # encoder (a re-decode promises zero encoder calls).
    allow_encode: bool = True
    width: int = 0  # page image size: grounding boxes are scaled to it
    height: int = 0


@dataclass(frozen=True)
class TokenRecord(Message):
    """A page's vision tokens as the encoder left them (stored at ``layout.encoded_key``, never
    published): a re-decode reads these to publish PageEncoded without running the encoder."""

    TOPIC: ClassVar[str] = ""  # a stored record, not a topic
    page: int
    n_pages: int
    tokens_key: str
    weights_id: str
    image_key: str
    image_hash: str
    text_layer_key: str = ""
    n_vision_tokens: int = 0

    def encoded(self, job_id: str, doc_id: str, mode: str, prompt: str, **extra: Any) -> PageEncoded:
        """The PageEncoded that carries these tokens to the decoder (``extra``: its other fields)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return PageEncoded(job_id=job_id, doc_id=doc_id, mode=mode, prompt=prompt, **fields, **extra)


@dataclass(frozen=True)
class PageDecoded(Message):
    TOPIC: ClassVar[str] = "page.decoded"
    job_id: str
    doc_id: str
    page: int
    n_pages: int
    mode: str
    prompt: str
    text: str  # markdown: grounding tags resolved (official post-processing)
    method: str  # model | text_layer | failed
    raw: str = ""  # the model's raw output (grounding tags kept); its best attempt for fallbacks
    failed: bool = False
    attempts: list = field(default_factory=list)  # [{"temperature","mode","outcome","n_tokens"}]
    boxes: list = field(
        default_factory=list
    )  # grounded blocks [{"label","boxes":[[x1,y1,x2,y2]],"content"}] (px)
    n_vision_tokens: int = 0
    n_text_tokens: int = 0
    cache_hit: bool = False
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    text_layer_agreement: float = -1.0  # 1 - CER of model text vs the PDF text layer; -1 = not measured
    width: int = 0  # page image size (the boxes' pixels); 0 = unknown
    height: int = 0


@dataclass(frozen=True)
class DocumentCompleted(Message):
    TOPIC: ClassVar[str] = "document.completed"
    job_id: str
    doc_id: str
    n_pages: int
    status: str  # completed | degraded | failed
    failed_pages: list = field(default_factory=list)
    markdown_key: str = ""
    result_key: str = ""
    reason: str = ""


@dataclass(frozen=True)
class DeadLetter(Message):
    TOPIC: ClassVar[str] = "dead-letter"
    stage: str
    reason: str
    detail: str
    original_topic: str
    original_key: str = ""
    original_value: str = ""  # truncated
    job_id: str = ""
    doc_id: str = ""
    page: int = 0
    failed_at: float = field(default_factory=_now)

    @property
    def key(self) -> str:
        return self.doc_id or self.original_key

    def validate(self) -> None:
        if not self.reason:
            raise InvalidMessage("DeadLetter: empty reason")


# Every message type on a topic, registered explicitly (topic setup, decoding by topic).
MESSAGE_TYPES: tuple[type[Message], ...] = (
    DocumentRef,
    DocumentSubmitted,
    PageRasterized,
    PageEncoded,
    PageDecoded,
    DocumentCompleted,
    DeadLetter,
)


def topic(msg_type: type[Message], prefix: str) -> str:
    return prefix + msg_type.TOPIC
