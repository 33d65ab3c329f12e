"""Tensor names and types of the Triton models, shared by model code, client and repository writer.

Decoder (decoupled, one request per page): inputs VISION_TOKENS (serialized ``VisionTokens``, one per
image), PROMPT, MAX_NEW_TOKENS, optional TEMPERATURE, TOP_P, NGRAM ([n, window]; [0, 0] = off), SEED,
STREAM (send each token as it is chosen). Responses: optional TOKEN_IDS deltas while streaming, then
a final one with TOKEN_IDS (all), TEXT, STOPPED, N_TOKENS.
Shard: LAYER, HIDDEN (rows), EXPERT_IDS -> EXPERT_OUT (expert_{id}(row) per row); rows travel in the
serving dtype (FP32 on the CPU, BF16 on a GPU) over DLPack, on the device they were computed on.
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


def shard_inputs(wire: str = "TYPE_FP32") -> dict[str, tuple]:
    """The shard's inputs; ``wire`` is the data type of the rows (the serving dtype)."""
    return {
        "LAYER": ("TYPE_INT32", [1], False),
        "HIDDEN": (wire, [-1, -1], False),
        "EXPERT_IDS": ("TYPE_INT32", [-1], False),
    }


def shard_outputs(wire: str = "TYPE_FP32") -> dict[str, tuple]:
    return {"EXPERT_OUT": (wire, [-1, -1])}


SHARD_INPUTS = shard_inputs()
SHARD_OUTPUTS = shard_outputs()

# Client-side datatype names (tritonclient) for the same inputs.
CLIENT_DTYPES = {
    "TYPE_STRING": "BYTES",
    "TYPE_INT32": "INT32",
    "TYPE_FP32": "FP32",
    "TYPE_INT64": "INT64",
    "TYPE_BOOL": "BOOL",
    "TYPE_BF16": "BF16",
    "TYPE_FP16": "FP16",
}


def shard_model_name(prefix: str, shard: int) -> str:
    """The one place shard model names are built."""
    return f"{prefix}_{shard}"
