"""Tensor names and types of the Triton models, shared by model code, client and repository writer.

Decoder (decoupled, one request per page): inputs VISION_TOKENS (serialized ``VisionTokens``, one per
image), PROMPT, MAX_NEW_TOKENS, optional TEMPERATURE, TOP_P, NGRAM ([n, window]; [0, 0] = off), SEED,
STREAM (send each token as it is chosen). Responses: optional TOKEN_IDS deltas while streaming, then
a final one with TOKEN_IDS (all), TEXT, STOPPED, N_TOKENS.
Shard: LAYER, HIDDEN (rows, fp32), EXPERT_IDS -> EXPERT_OUT (expert_{id}(row) per row, fp32).
"""

from __future__ import annotations

DECODER_INPUTS = {
    "VISION_TOKENS": ("TYPE_STRING", [-1], False),
    "PROMPT": ("TYPE_STRING", [1], False),
    "MAX_NEW_TOKENS": ("TYPE_INT32", [1], False),
    "TEMPERATURE": ("TYPE_FP32", [1], True),
    "TOP_P": ("TYPE_FP32", [1], True),
    "NGRAM": ("TYPE_INT32", [2], True),
    "SEED": ("TYPE_INT64", [1], True),
    "STREAM": ("TYPE_BOOL", [1], True),
}
DECODER_OUTPUTS = {
    "TOKEN_IDS": ("TYPE_INT32", [-1]),
    "TEXT": ("TYPE_STRING", [1]),
    "STOPPED": ("TYPE_BOOL", [1]),
    "N_TOKENS": ("TYPE_INT32", [1]),
}
SHARD_INPUTS = {
    "LAYER": ("TYPE_INT32", [1], False),
    "HIDDEN": ("TYPE_FP32", [-1, -1], False),
    "EXPERT_IDS": ("TYPE_INT32", [-1], False),
}
SHARD_OUTPUTS = {"EXPERT_OUT": ("TYPE_FP32", [-1, -1])}

# Client-side datatype names (tritonclient) for the same inputs.
CLIENT_DTYPES = {
    "TYPE_STRING": "BYTES",
    "TYPE_INT32": "INT32",
    "TYPE_FP32": "FP32",
    "TYPE_INT64": "INT64",
    "TYPE_BOOL": "BOOL",
}


def shard_model_name(prefix: str, shard: int) -> str:
    """The one place shard model names are built."""
    return f"{prefix}_{shard}"
