"""UserEncoder: padding never changes the output; empty histories stay finite."""

from __future__ import annotations

import pytest
import torch

from deep_retrieval.core.modules.encoder import UserEncoder
from deep_retrieval.core.modules.softmax import SoftmaxModel

KINDS = [("gru", False), ("mean", False), ("mean", True)]


def _encoder(kind: str, project: bool) -> UserEncoder:
    torch.manual_seed(0)
    return UserEncoder(20, 8, kind, project=project).eval()


def _right_aligned(items: list[int], width: int) -> list[int]:
    return [-1] * (width - len(items)) + items


@pytest.mark.parametrize("kind,project", KINDS)
def test_padding_does_not_change_the_output(kind: str, project: bool) -> None:
    enc = _encoder(kind, project)
    items = [3, 7, 1, 12]
    with torch.no_grad():
        outs = [enc(torch.tensor([_right_aligned(items, w)])) for w in (4, 5, 9, 30)]
        # A row with padding next to a longer row (different batch composition).
        batch = enc(
            torch.tensor(
                [_right_aligned(items, 9), _right_aligned([2, 4, 6, 8, 10, 11, 13, 15, 17], 9)]
            )
        )
    for out in [*outs[1:], batch[:1]]:
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,project", KINDS)
def test_missing_items_inside_the_row_are_skipped(kind: str, project: bool) -> None:
    enc = _encoder(kind, project)
    with torch.no_grad():
        holes = enc(torch.tensor([[-1, 3, -1, 7, -1, 1]]))
        dense = enc(torch.tensor([[-1, -1, -1, 3, 7, 1]]))
    torch.testing.assert_close(holes, dense, rtol=1e-5, atol=1e-6)


def test_gru_reads_order_and_mean_does_not() -> None:
    gru, mean = _encoder("gru", False), _encoder("mean", False)
    with torch.no_grad():
        a, b = torch.tensor([[3, 7, 1]]), torch.tensor([[1, 7, 3]])
        assert not torch.allclose(gru(a), gru(b))
        torch.testing.assert_close(mean(a), mean(b))


@pytest.mark.parametrize("kind,project", KINDS)
def test_empty_history_is_finite(kind: str, project: bool) -> None:
    enc = _encoder(kind, project)
    out = enc(torch.tensor([[-1, -1, -1], [-1, 4, 5]]))
    assert out.shape == (2, 8)
    assert torch.isfinite(out).all()
    out.sum().backward()  # gradients flow through a batch that contains an empty row
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_padding_embedding_stays_zero_after_training_step() -> None:
    enc = _encoder("mean", False)
    opt = torch.optim.SGD(enc.parameters(), lr=1.0)
    enc(torch.tensor([[-1, 2, 3], [-1, -1, 4]])).sum().backward()
    opt.step()
    assert torch.count_nonzero(enc.item_embedding.weight[enc.pad]) == 0


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="kind"):
        UserEncoder(5, 4, "lstm")
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        UserEncoder(5, 4)(torch.tensor([1, 2]))


def test_sampled_softmax_matches_full_softmax_with_all_items() -> None:
    torch.manual_seed(0)
    model = SoftmaxModel(30, 8, "mean")
    u = torch.randn(5, 8)
    targets = torch.tensor([0, 3, 7, 29, 11])
    full = model.sampled_softmax_loss(u, targets, 30)
    want = torch.nn.functional.cross_entropy(model.scores(u), targets)
    torch.testing.assert_close(full, want)
    # Many uniform negatives with the log-Q correction approach the exact loss.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sampled = torch.stack(
            [model.sampled_softmax_loss(u, targets, 29, generator=gen) for _ in range(200)]
        )
    assert abs(float(sampled.mean()) - float(full.detach())) < 0.15


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("project", [False, True])
def test_encode_positions_equals_one_forward_per_position(ordered: bool, project: bool) -> None:
    """The causal pass (prefix sums) against the reference: each position's history encoded
    alone."""
    enc = _encoder("mean", project)
    torch.manual_seed(1)
    lengths = torch.tensor([1, 6, 3, 9])
    items = torch.randint(0, 20, (int(lengths.sum()),))
    keep = torch.rand(3, len(items)) > 0.3
    L = 4
    for k in (None, keep):
        got = enc.encode_positions(items, lengths, L, ordered=ordered, keep=k)
        want, start = [], 0
        for n in lengths.tolist():
            for q in range(n):
                i = start + q
                window = (
                    range(max(start, i - L), i)
                    if ordered
                    else [j for j in range(start, start + n) if j != i]
                )
                kept = [int(items[j]) for j in window if k is None or k[i % 3, j]]
                want.append(enc(torch.tensor([_right_aligned(kept, 10)]))[0])
            start += n
        torch.testing.assert_close(got, torch.stack(want), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="mean encoder"):
        _encoder("gru", False).encode_positions(items, lengths, L, ordered=True)


def test_encode_row_is_forward_on_one_row() -> None:
    import numpy as np

    enc = _encoder("mean", False)
    with torch.no_grad():
        for items in ([3, 7, 1, 12], []):
            want = enc(torch.tensor([_right_aligned(items, 6)]))
            torch.testing.assert_close(enc.encode_row(np.array(items, dtype=np.int64)), want)
        assert _encoder("gru", False).encode_row(np.array([1])) is None
        assert _encoder("mean", True).encode_row(np.array([1])) is None
    assert enc.encode_row(np.array([1])) is None  # autograd on: no shortcut
