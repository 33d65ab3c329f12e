"""ocrstream: DeepSeek-OCR style optical-compression OCR, embedded or streamed over Kafka."""

__version__ = "0.1.0"
