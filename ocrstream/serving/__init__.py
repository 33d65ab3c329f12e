"""Triton Inference Server serving of the MoE decoder with expert-parallel shards (docs/triton.md).

``placement`` (which shard holds which routed experts), ``eplb`` (the load-balancing planner),
``engine`` (continuous batching over the decoder's non-expert layers), ``expert_shard`` and
``triton_decoder`` (the logic behind the thin ``model_repo/*/1/model.py`` files), ``repo`` (model
repository writer), ``launcher`` (a local tritonserver), ``controller`` (rebalancing), ``device``
(device/dtype from configuration, Triton instance kinds, DLPack exchange, pinned staging),
``sampling`` (per-step token choice, the incremental n-gram rule)."""
