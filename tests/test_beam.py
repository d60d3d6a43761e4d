from __future__ import annotations

import numpy as np
import pytest
import torch

from deep_retrieval.core.beam import all_paths, beam_search, enumerate_paths
from deep_retrieval.core.modules.structure import StructureNet


def _net(n_layers: int, n_nodes: int, hidden_dim: int | None = None, seed: int = 0) -> StructureNet:
    torch.manual_seed(seed)
    # float64 so near-ties between distinct paths cannot flip the order between the two codes
    return StructureNet(6, n_layers, n_nodes, node_dim=3, hidden_dim=hidden_dim).double()


SHAPES = [(1, 1), (1, 6), (2, 3), (3, 4), (4, 2), (2, 7)]


@pytest.mark.parametrize(("n_layers", "n_nodes"), SHAPES)
@pytest.mark.parametrize("hidden_dim", [None, 5])
def test_full_beam_equals_enumeration(n_layers: int, n_nodes: int, hidden_dim: int | None) -> None:
    net = _net(n_layers, n_nodes, hidden_dim)
    u = torch.randn(4, 6, dtype=torch.float64)
    n_paths = n_nodes**n_layers
    with torch.no_grad():
        reference = enumerate_paths(net, u)
        for beam_size in (n_paths, n_paths + 5):
            paths, log_probs = beam_search(net, u, beam_size)
            assert paths.shape == (4, n_paths, n_layers) and paths.dtype == torch.long
            assert torch.equal(paths, reference.paths)
            torch.testing.assert_close(log_probs, reference.log_probs)
    total = reference.log_probs.exp().sum(dim=1)
    torch.testing.assert_close(total, torch.ones(4, dtype=torch.float64))


def test_single_layer_is_topk() -> None:
    net = _net(1, 9)
    u = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        paths, log_probs = beam_search(net, u, 4)
        top = net.layer_log_probs(u, torch.zeros(5, 0, dtype=torch.long)).topk(4, dim=1)
    assert torch.equal(paths[:, :, 0], top.indices)
    torch.testing.assert_close(log_probs, top.values)


@pytest.mark.parametrize("beam_size", [1, 3, 10])
def test_narrow_beam_sorted_distinct_and_consistent(beam_size: int) -> None:
    net = _net(3, 5, hidden_dim=4)
    u = torch.randn(6, 6, dtype=torch.float64)
    with torch.no_grad():
        paths, log_probs = beam_search(net, u, beam_size)
        best = enumerate_paths(net, u).log_probs[:, 0]
        rescored = net.log_prob(u, paths)
    assert paths.shape == (6, beam_size, 3)
    assert (log_probs[:, 1:] <= log_probs[:, :-1]).all()
    ids = paths[:, :, 0] * 25 + paths[:, :, 1] * 5 + paths[:, :, 2]
    assert all(len(set(row.tolist())) == beam_size for row in ids)
    torch.testing.assert_close(log_probs, rescored)  # cumulative scores are the paths' log-probs
    assert (log_probs[:, 0] <= best + 1e-12).all()  # approximate: never better than exact


def test_greedy_beam_of_one() -> None:
    net = _net(3, 4)
    u = torch.randn(3, 6, dtype=torch.float64)
    with torch.no_grad():
        paths, _ = beam_search(net, u, 1)
        prefix = torch.zeros(3, 0, dtype=torch.long)
        for _ in range(3):
            node = net.layer_log_probs(u, prefix).argmax(dim=1, keepdim=True)
            prefix = torch.cat([prefix, node], dim=1)
    assert torch.equal(paths[:, 0], prefix)


def test_batch_equals_single_user() -> None:
    net = _net(3, 6, hidden_dim=7)
    u = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        batch_paths, batch_lp = beam_search(net, u, 8)
        for i in range(5):
            paths, lp = beam_search(net, u[i : i + 1], 8)
            assert torch.equal(paths[0], batch_paths[i])
            torch.testing.assert_close(lp[0], batch_lp[i])


def test_ties_broken_by_path_id() -> None:
    net = _net(2, 3)
    with torch.no_grad():
        for param in net.parameters():
            param.zero_()  # uniform: every path has log-prob -log 9
    u = torch.randn(2, 6, dtype=torch.float64)
    with torch.no_grad():
        beam = beam_search(net, u, 9)
        reference = enumerate_paths(net, u)
    expected = all_paths(2, 3)[None].expand(2, -1, -1)
    assert torch.equal(beam.paths, expected)
    assert torch.equal(reference.paths, expected)


def test_autograd_is_left_to_the_caller() -> None:
    net = _net(2, 3)
    u = torch.randn(2, 6, dtype=torch.float64)
    assert beam_search(net, u, 4).log_probs.requires_grad
    with torch.no_grad():
        assert not beam_search(net, u, 4).log_probs.requires_grad


def test_validation() -> None:
    net = _net(2, 3)
    u = torch.randn(2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(net, u, 0)
    with pytest.raises(ValueError, match="input_dim=6"):
        beam_search(net, torch.randn(2, 5, dtype=torch.float64), 3)
    big = StructureNet(6, 4, 100, node_dim=2)
    with pytest.raises(ValueError, match="beam_search"):
        enumerate_paths(big, torch.randn(1, 6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    net = _net(3, 4)
    u = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        cpu = beam_search(net, u, 64)
        gpu = beam_search(net.cuda(), u.cuda(), 64)
    assert torch.equal(gpu.paths.cpu(), cpu.paths)
    torch.testing.assert_close(gpu.log_probs.cpu(), cpu.log_probs)


@pytest.mark.parametrize("beam_size", [1, 3, 10])
def test_unordered_beam_holds_the_same_paths(beam_size: int) -> None:
    """The serving shortcut (no sort) returns the ordered beam's paths, as a set per user."""
    net = _net(3, 4, hidden_dim=5)
    u = torch.randn(6, 6, dtype=torch.float64)
    with torch.no_grad():
        ordered = beam_search(net, u, beam_size)
        loose = beam_search(net, u, beam_size, ordered=False)
    for r in range(6):
        a = {tuple(p) for p in ordered.paths[r].tolist()}
        b = {tuple(p) for p in loose.paths[r].tolist()}
        assert a == b
        torch.testing.assert_close(
            loose.log_probs[r].sort().values, ordered.log_probs[r].sort().values
        )


@pytest.mark.parametrize(
    ("n_layers", "n_nodes", "hidden_dim"), [(1, 6, None), (2, 5, 7), (3, 4, None), (3, 6, 9)]
)
@pytest.mark.parametrize("beam_size", [1, 3, 50])
def test_compiled_structure_matches_the_torch_beam(
    n_layers, n_nodes, hidden_dim, beam_size
) -> None:
    """The numpy serving twin against :func:`beam_search`: same paths, same log-probabilities."""
    from deep_retrieval.core.beam import CompiledStructure

    torch.manual_seed(3)
    net = StructureNet(6, n_layers, n_nodes, node_dim=3, hidden_dim=hidden_dim)
    u = torch.randn(7, 6)
    with torch.no_grad():
        ref = beam_search(net, u, beam_size)
    paths, lp = CompiledStructure(net).beam_search(u.numpy(), beam_size)
    assert paths.shape == tuple(ref.paths.shape) and paths.dtype == np.int64
    for r in range(7):
        got = sorted(zip(lp[r].tolist(), map(tuple, paths[r].tolist()), strict=True), reverse=True)
        want = sorted(
            zip(ref.log_probs[r].tolist(), map(tuple, ref.paths[r].tolist()), strict=True),
            reverse=True,
        )
        assert [p for _, p in got] == [p for _, p in want]
        np.testing.assert_allclose([s for s, _ in got], [s for s, _ in want], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="input_dim"):
        CompiledStructure(net).beam_search(np.zeros((2, 5), np.float32), 2)
