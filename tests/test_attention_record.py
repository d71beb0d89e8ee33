"""record_attention: the explicit-softmax path gives the fused path's outputs and weights that mean what they say."""

import pytest
import torch

from shunted_lab.models import build_mixer
from shunted_lab.models.attention import AttentionMap, record_attention
from shunted_lab.models.mixers.swin import ShiftedWindowAttention

SETTINGS = dict(sr_ratio=4, window_size=4, shift=True)


def randomized(name: str, **overrides):
    torch.manual_seed(0)
    m = build_mixer(name, 32, 4, {**SETTINGS, **overrides})
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m.eval()


# Shunted's 4x4 and 2x2 aggregation do not divide 10x7; swin pads 10x7 and 5x9 up to its window.
@pytest.mark.parametrize("hw", [(8, 8), (10, 7), (5, 9)])
@pytest.mark.parametrize("name", ["vit", "pvt", "swin", "shunted"])
def test_recording_keeps_the_outputs_and_the_weights_sum_to_one(name, hw):
    m = randomized(name)
    x = torch.randn(2, hw[0] * hw[1], 32)
    with torch.no_grad():
        fused = m(x, hw)
        with record_attention(m) as maps:
            recorded = m(x, hw)
        after = m(x, hw)
    torch.testing.assert_close(recorded, fused, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, fused)
    [amaps] = maps.values()
    assert len(amaps) == (2 if name == "shunted" else 1)
    for amap in amaps:
        assert amap.weights.shape[:3] == (2, 2 if name == "shunted" else 4, hw[0] * hw[1])
        torch.testing.assert_close(amap.weights.sum(-1), torch.ones(amap.weights.shape[:3]))
        assert (amap.weights >= 0).all()


def test_shunted_records_each_head_group_over_its_own_aggregated_keys():
    m = randomized("shunted")
    with torch.no_grad(), record_attention(m) as maps:
        m(torch.randn(1, 10 * 7, 32), (10, 7))
    coarse, fine = maps[""]
    assert (coarse.group, coarse.key_hw, coarse.key_stride) == ("rate 4", (2, 1), (4, 4))  # 10 // 4, 7 // 4
    assert (fine.group, fine.key_hw, fine.key_stride) == ("rate 2", (5, 3), (2, 2))
    assert coarse.weights.shape[-1] == 2 and fine.weights.shape[-1] == 15
    # Key centres in query-grid units: cell (1, 0) at rate 4 covers rows 4..7, columns 0..3.
    assert coarse.key_positions()[1].tolist() == [5.5, 1.5]


def test_pvt_key_grid_is_the_reduced_map():
    m = randomized("pvt")
    with torch.no_grad(), record_attention(m) as maps:
        m(torch.randn(1, 64, 32), (8, 8))
    [amap] = maps[""]
    assert amap.key_hw == (2, 2) and amap.key_grid(0).shape == (1, 4, 2, 2)


def test_swin_masked_keys_get_zero_weight():
    """8x8 map, window 4, shift 2: rolled by -2, token (0, 0) sits in the last window's corner region,
    which holds tokens rows {0, 1} x columns {0, 1} only; token (7, 7) sees rows/cols {6, 7}."""
    m = randomized("swin")
    with torch.no_grad(), record_attention(m) as maps:
        m(torch.randn(1, 64, 32), (8, 8))
    [amap] = maps[""]
    for token, seen in ((0, {0, 1, 8, 9}), (63, {54, 55, 62, 63})):
        grid = amap.key_grid(token)[0].flatten(1)  # heads, 64
        assert set(grid.sum(0).nonzero().flatten().tolist()) == seen


def test_swin_padded_keys_get_zero_weight():
    m = ShiftedWindowAttention(32, 2, window_size=4).eval()
    with torch.no_grad(), record_attention(m) as maps:
        m(torch.randn(1, 5 * 5, 32), (5, 5))  # padded to 8x8: the window at (0, 0) holds 16 real tokens
    [amap] = maps[""]
    last = 5 * 5 - 1  # token (4, 4): alone in its padded window
    assert amap.key_grid(last)[0, :, 4, 4].tolist() == pytest.approx([1.0, 1.0])


def test_mean_distance_by_hand():
    """Two queries on a 1x2 grid, each putting weight 1 on the other token: distance 1.
    Keys at rate 2 on a 2x2 grid: one key centred at (0.5, 0.5), sqrt(0.5) from every query."""
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    assert AttentionMap(swap, (1, 2), (1, 2)).mean_distance().tolist() == [1.0]
    pooled = AttentionMap(torch.ones(1, 1, 4, 1), (2, 2), (1, 1), key_stride=(2, 2))
    assert pooled.mean_distance().item() == pytest.approx(0.5**0.5)


def test_recording_needs_a_recordable_mixer():
    with pytest.raises(ValueError, match="no RecordableAttention"):
        with record_attention(torch.nn.Linear(2, 2)):
            pass
