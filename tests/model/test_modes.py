"""Mode table, token counts, tile selection and preprocessing rules."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ocrstream.model.modes import (
    MODES,
    Mode,
    candidate_grids,
    num_encoder_tokens,
    num_vision_tokens,
    preprocess,
    select_grid,
    tile_grid,
)

ORDER_9 = [
    (1, 2),
    (2, 1),
    (3, 1),
    (1, 3),
    (2, 2),
    (4, 1),
    (1, 4),
    (5, 1),
    (1, 5),
    (1, 6),
    (6, 1),
    (3, 2),
    (2, 3),
    (7, 1),
    (1, 7),
    (4, 2),
    (2, 4),
    (1, 8),
    (8, 1),
    (1, 9),
    (3, 3),
    (9, 1),
]
ORDER_6 = [
    (1, 2),
    (2, 1),
    (3, 1),
    (1, 3),
    (4, 1),
    (1, 4),
    (2, 2),
    (1, 5),
    (5, 1),
    (6, 1),
    (2, 3),
    (1, 6),
    (3, 2),
]


def test_candidate_order_matches_official():
    assert list(candidate_grids(2, 9)) == ORDER_9
    assert list(candidate_grids(2, 6)) == ORDER_6


@pytest.mark.parametrize(
    ("mode", "grid", "placeholders"),
    [("tiny", 64, 73), ("small", 100, 111), ("base", 256, 273), ("large", 400, 421)],
)
def test_native_mode_counts(mode, grid, placeholders):
    for w, h in ((800, 1100), (300, 200), (2000, 2000)):
        assert num_encoder_tokens(mode, w, h) == grid
        assert num_vision_tokens(mode, w, h) == placeholders


@pytest.mark.parametrize(
    ("size", "grid", "placeholders"),
    [
        ((1191, 1684), (2, 3), 903),
        ((1684, 1191), (3, 2), 893),
        ((1000, 1000), (2, 2), 693),
        ((2000, 500), (4, 1), 683),
        ((640, 640), (1, 1), 273),
        ((500, 300), (1, 1), 273),
    ],
)
def test_gundam_counts(size, grid, placeholders):
    for max_crops in (6, 9):
        assert tile_grid("gundam", *size, max_crops=max_crops) == grid
        assert num_vision_tokens("gundam", *size, max_crops=max_crops) == placeholders


def test_gundam_a4_encoder_tokens_and_upper_bounds():
    assert num_encoder_tokens("gundam", 1191, 1684) == 856
    assert tile_grid("gundam", 3000, 3000, max_crops=9) == (3, 3)
    assert num_encoder_tokens("gundam", 3000, 3000, max_crops=9) == 1156
    assert tile_grid("gundam", 3000, 3000, max_crops=6) in {(2, 2), (2, 3), (3, 2)}
    assert num_encoder_tokens("gundam", 3000, 3000, max_crops=6) <= 856


def test_gundam_m_counts():
    assert num_vision_tokens("gundam-m", 1191, 1684) == 421 + (16 * 3) * (16 * 2 + 1)
    assert num_vision_tokens("gundam_m", 600, 600) == 421


def test_tie_rule():
    # 1000x500 (ratio 2): (2,1) first wins; later ties like (4,2) need area > 0.5 * 640^2 * 8.
    assert select_grid(1000, 500, 640) == (2, 1)
    assert select_grid(3000, 1500, 640) == (4, 2)  # 4.5 MP > 0.5 * 640^2 * 8 = 1.64 MP
    # square: (2,2) vs later (3,3) with max 9
    assert select_grid(1000, 1000, 640, 2, 9) == (2, 2)
    assert select_grid(2000, 2000, 640, 2, 9) == (3, 3)


def test_num_vision_tokens_matches_preprocess():
    for mode in MODES:
        for size in ((1191, 1684), (700, 300), (640, 641), (100, 100)):
            img = Image.new("RGB", size, (10, 200, 30))
            inp = preprocess(img, mode)
            assert inp.num_placeholders == num_vision_tokens(mode, *size), (mode, size)


def test_preprocess_rules():
    img = Image.new("RGB", (400, 200), (255, 255, 255))
    base = preprocess(img, "base")
    assert base.global_view.shape == (3, 1024, 1024) and base.tiles is None
    grey = (127 / 255 - 0.5) / 0.5
    # padded (aspect kept): top rows are pad grey, the middle is white (1.0)
    assert torch.allclose(base.global_view[:, 0, 0], torch.full((3,), grey))
    assert torch.allclose(base.global_view[:, 512, 512], torch.ones(3))
    tiny = preprocess(img, "tiny")  # stretched: no grey anywhere
    assert tiny.global_view.shape == (3, 512, 512)
    assert torch.allclose(tiny.global_view, torch.ones_like(tiny.global_view))
    g = preprocess(Image.new("RGB", (1191, 1684), (0, 0, 0)), "gundam")
    assert g.grid == (2, 3) and g.tiles.shape == (6, 3, 640, 640)
    assert torch.allclose(g.tiles, -torch.ones_like(g.tiles))


def test_tile_order_row_major():
    img = Image.new("RGB", (1400, 700))
    # left half red, right half blue -> 2x1 grid: tile 0 red, tile 1 blue
    img.paste((255, 0, 0), (0, 0, 700, 700))
    img.paste((0, 0, 255), (700, 0, 1400, 700))
    inp = preprocess(img, "gundam")
    assert inp.grid == (2, 1)
    assert inp.tiles[0, 0].mean() > 0.9 and inp.tiles[1, 2].mean() > 0.9


def test_custom_small_modes_and_errors():
    m = Mode("embedded-256", 256, 256, False)
    assert num_vision_tokens(m, 900, 1200) == 4 * 5 + 1
    with pytest.raises(ValueError, match="multiple of 16"):
        Mode("bad", 250, 250, False)
    with pytest.raises(ValueError, match="unknown mode"):
        num_vision_tokens("huge", 10, 10)
