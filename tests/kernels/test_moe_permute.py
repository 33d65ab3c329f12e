"""Expert alignment (sort + pad to the GEMM block) and the weighted un-permutation."""

import pytest
import torch

from ocrstream.kernels.moe_permute import moe_align_ref, moe_align_triton, moe_combine_ref, moe_combine_triton

BLOCK_M = 16


def _topk_ids(case, M, E, K, device):
    if case == "random_with_empty":
        ids = torch.stack(
            [torch.randperm(E - 2, device=device)[:K] for _ in range(M)]
        )  # experts E-2, E-1 empty
        return ids
    if case == "one_expert":
        return torch.full((M, K), 3, device=device)  # K > 1 repeats: routing never does, align must not care
    raise AssertionError(case)


def _check_alignment(al, ref, topk_ids, E):
    numel = topk_ids.numel()
    flat = topk_ids.reshape(-1).long()
    assert torch.equal(al.expert_offsets, ref.expert_offsets)
    assert torch.equal(al.expert_ids, ref.expert_ids)
    offs = al.expert_offsets.tolist()
    sorted_ids = al.sorted_token_ids.long()
    for e in range(E):
        seg = sorted_ids[offs[e] : offs[e + 1]]
        real = seg[seg < numel]
        # The kernel hands out rows in arbitrary order within an expert; compare as sets.
        assert sorted(real.tolist()) == torch.nonzero(flat == e).flatten().tolist()
        assert (seg[len(real) :] == numel).all(), "padding sits after the real rows"
        assert offs[e + 1] - offs[e] == -(-len(real) // BLOCK_M) * BLOCK_M
    assert (sorted_ids[offs[E] :] == numel).all()
    # inverse map: the row of assignment a holds a
    assert torch.equal(sorted_ids[al.inv_positions.long()], torch.arange(numel, device=topk_ids.device))


@pytest.mark.parametrize(
    "case,K", [("random_with_empty", 6), ("random_with_empty", 1), ("one_expert", 1), ("one_expert", 6)]
)
@pytest.mark.parametrize("given_counts", [False, True])
def test_align_matches_reference(device, seed, poison, case, K, given_counts):
    M, E = 37, 8
    topk_ids = _topk_ids(case, M, E, K, device).to(torch.int32)
    counts = torch.bincount(topk_ids.flatten().long(), minlength=E).to(torch.int32) if given_counts else None
    al = moe_align_triton(topk_ids, E, BLOCK_M, expert_counts=counts, block_size=64)
    ref = moe_align_ref(topk_ids, E, BLOCK_M)
    _check_alignment(al, ref, topk_ids, E)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("K", [1, 6])
def test_combine_matches_reference(device, seed, poison, tol, dtype, K):
    M, E, N = 37, 8, 80  # N=80: the feature tail of a 64-wide block is masked
    topk_ids = torch.stack([torch.randperm(E, device=device)[:K] for _ in range(M)]).to(torch.int32)
    al = moe_align_ref(topk_ids, E, BLOCK_M)
    weights = torch.rand(M, K, device=device)
    y_sorted = torch.randn(al.sorted_token_ids.numel(), N, device=device).to(dtype)
    y_sorted[al.sorted_token_ids.long() >= M * K] = float("nan")  # padding rows must never be read
    out = moe_combine_triton(y_sorted, al.inv_positions, weights, block_size_m=16, block_size_n=64)
    ref = moe_combine_ref(y_sorted, al.inv_positions, weights)
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref, **tol.elementwise(dtype))


def test_align_rejects_bad_input(device):
    with pytest.raises(ValueError, match="topk_ids must be int32/int64"):
        moe_align_triton(torch.zeros(4, 2, device=device), 8, 16)
    with pytest.raises(ValueError, match=r"expert_counts must be int32 \[8\]"):
        moe_align_triton(
            torch.zeros(4, 2, dtype=torch.int32, device=device), 8, 16, expert_counts=torch.zeros(4)
        )
