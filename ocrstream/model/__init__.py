"""DeepSeek-OCR in PyTorch: DeepEncoder (SAM + 16x compressor + CLIP + projector) and the MoE decoder.

Import torch-heavy pieces from their modules (``ocrstream.model.runtime.OcrModel``,
``ocrstream.model.deepseek_ocr.DeepseekOCRForCausalLM``); ``modes`` and ``config`` are light.
"""
