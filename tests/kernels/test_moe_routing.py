"""Router kernel (scores, greedy top-k, weight normalisation/scaling, counts) vs DeepSeek-V2's gate."""

import pytest
import torch

from ocrstream.kernels.moe_routing import moe_routing_ref, moe_routing_triton


def _by_expert(ids, weights):
    """Sort each row's picks by expert id: torch.topk(sorted=False) leaves the order unspecified."""
    order = ids.long().argsort(dim=1)
    return ids.long().gather(1, order), weights.gather(1, order)


@pytest.mark.parametrize(
    "n_experts,top_k,norm,scale,scoring",
    [
        (8, 1, False, 1.0, "softmax"),
        (6, 2, False, 1.0, "softmax"),  # 6 experts: the block's expert tail is masked
        (64, 6, False, 1.0, "softmax"),  # the official DeepSeek-OCR router
        (64, 6, True, 2.5, "softmax"),  # renormalised then scaled
        (12, 6, True, 1.0, "sigmoid"),
    ],
)
def test_routing_matches_reference(device, seed, poison, n_experts, top_k, norm, scale, scoring):
    M = 37  # not a multiple of the 16-row block
    logits = torch.randn(M, n_experts, device=device) * 2
    w, ids, counts = moe_routing_triton(logits, top_k, norm, scale, scoring, block_size_m=16)
    rw, rids, rcounts = moe_routing_ref(logits, top_k, norm, scale, scoring)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32
    ids_s, w_s = _by_expert(ids, w)
    rids_s, rw_s = _by_expert(rids, rw)
    assert torch.equal(ids_s, rids_s)
    # fp32 softmax: the kernel's exp/sum order differs from torch's by a few ulps.
    torch.testing.assert_close(w_s, rw_s, atol=1e-6, rtol=1e-5)
    assert torch.equal(counts, rcounts)
    assert int(counts.sum()) == M * top_k
    # Kernel order is by descending score.
    assert (w[:, :-1] >= w[:, 1:]).all()


def test_routing_all_tokens_on_one_expert_and_empty_experts(device, seed, poison):
    M, E = 40, 8
    logits = torch.randn(M, E, device=device)
    logits[:, 5] += 30.0  # expert 5 wins everywhere
    logits[:, 2] += 20.0  # expert 2 is everyone's second pick
    w, ids, counts = moe_routing_triton(logits, 1, block_size_m=64)
    assert (ids == 5).all()
    assert counts.tolist() == [0, 0, 0, 0, 0, M, 0, 0]
    w2, ids2, counts2 = moe_routing_triton(logits, 2, block_size_m=64)
    assert counts2.tolist() == [0, 0, M, 0, 0, M, 0, 0]
    _, rids2, rcounts2 = moe_routing_ref(logits, 2)
    assert torch.equal(counts2, rcounts2)
    assert torch.equal(ids2.long().sort(1).values, rids2.long().sort(1).values)


def test_routing_rejects_bad_config(device):
    logits = torch.randn(4, 6, device=device)
    with pytest.raises(ValueError, match="top_k 7"):
        moe_routing_triton(logits, 7)
    with pytest.raises(ValueError, match="group_limited_greedy"):
        moe_routing_triton(logits, 2, topk_method="group_limited_greedy")
    with pytest.raises(ValueError, match="'tanh'"):
        moe_routing_ref(logits, 2, scoring_func="tanh")
