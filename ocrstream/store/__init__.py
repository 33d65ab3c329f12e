"""Blob store: the protocol (``base``), MinIO/S3 (``s3``) and local folder (``local``)."""

from ocrstream.store.base import Store, get_json, put_json
from ocrstream.store.local import LocalStore

__all__ = ["LocalStore", "Store", "get_json", "put_json"]
