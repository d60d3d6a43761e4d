from __future__ import annotations

import itertools

import pytest
import torch

from deep_retrieval.core.modules.structure import StructureNet


def _all_paths(n_layers: int, n_nodes: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(n_nodes), repeat=n_layers)))


@pytest.mark.parametrize("hidden_dim", [None, 16])
def test_probabilities_over_all_paths_sum_to_one(hidden_dim: int | None) -> None:
    torch.manual_seed(0)
    net = StructureNet(input_dim=6, n_layers=2, n_nodes=3, node_dim=4, hidden_dim=hidden_dim)
    u = torch.randn(5, 6)
    paths = _all_paths(2, 3)[None].expand(5, -1, -1)  # (N, 9, D)
    log_probs = net.log_prob(u, paths)  # (N, 9)
    assert log_probs.shape == (5, 9)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(5))


def test_log_prob_is_sum_of_layer_log_probs() -> None:
    torch.manual_seed(1)
    net = StructureNet(input_dim=5, n_layers=3, n_nodes=4, node_dim=3, hidden_dim=8)
    u = torch.randn(3, 5)
    paths = torch.randint(0, 4, (3, 2, 3))  # (N, J, D)
    expected = torch.zeros(3, 2)
    for j in range(2):
        for d in range(3):
            layer = net.layer_log_probs(u, paths[:, j, :d])  # (N, K)
            expected[:, j] += layer.gather(1, paths[:, j, d : d + 1]).squeeze(1)
    torch.testing.assert_close(net.log_prob(u, paths), expected)
    torch.testing.assert_close(net(u, paths), expected)
    torch.testing.assert_close(net.path_loss(u, paths), -torch.logsumexp(expected, dim=1))


def test_layer_log_probs_shapes_and_broadcast() -> None:
    torch.manual_seed(2)
    net = StructureNet(input_dim=4, n_layers=3, n_nodes=5, node_dim=2)
    u = torch.randn(3, 4)
    prefix = torch.randint(0, 5, (3, 6, 2))  # (N, B, d)
    batched = net.layer_log_probs(u[:, None, :], prefix)  # (N, B, K)
    assert batched.shape == (3, 6, 5)
    torch.testing.assert_close(batched.logsumexp(dim=-1), torch.zeros(3, 6))
    for b in range(6):
        torch.testing.assert_close(batched[:, b], net.layer_log_probs(u, prefix[:, b]))
    with pytest.raises(ValueError, match="n_layers=3"):
        net.layer_log_probs(u, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="input_dim=4"):
        net.layer_log_probs(torch.randn(3, 7), torch.zeros(3, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="n_layers=3"):
        net.log_prob(u, torch.zeros(3, 2, 4, dtype=torch.long))


def test_no_underflow_deep_and_wide() -> None:
    torch.manual_seed(3)
    net = StructureNet(input_dim=8, n_layers=4, n_nodes=100, node_dim=8)
    with torch.no_grad():  # sharpen the softmaxes so some paths are astronomically unlikely
        for layer in net.layers:
            layer.weight.mul_(200.0)
    u = torch.randn(16, 8)
    paths = torch.randint(0, 100, (16, 5, 4))
    log_probs = net.log_prob(u, paths)
    assert torch.isfinite(log_probs).all()
    assert (log_probs < -200).any()  # exp() of these underflows in float32: log space is needed
    assert torch.isfinite(net.path_loss(u, paths)).all()


def test_gradients_flow_to_all_parameters_and_input() -> None:
    torch.manual_seed(4)
    net = StructureNet(input_dim=6, n_layers=3, n_nodes=4, node_dim=3, hidden_dim=5)
    u = torch.randn(8, 6, requires_grad=True)
    paths = torch.randint(0, 4, (8, 2, 3))
    net.path_loss(u, paths).mean().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="n_nodes"):
        StructureNet(input_dim=4, n_layers=2, n_nodes=0, node_dim=2)
    with pytest.raises(ValueError, match="hidden_dim"):
        StructureNet(input_dim=4, n_layers=2, n_nodes=3, node_dim=2, hidden_dim=0)
    net = StructureNet(input_dim=4, n_layers=1, n_nodes=3, node_dim=2)
    assert len(net.node_emb) == 0  # layer D's nodes are never embedded


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda() -> None:
    net = StructureNet(input_dim=4, n_layers=3, n_nodes=5, node_dim=2).cuda()
    u = torch.randn(3, 4, device="cuda")
    paths = torch.randint(0, 5, (3, 2, 3), device="cuda")
    cpu = net.cpu().log_prob(u.cpu(), paths.cpu())
    torch.testing.assert_close(net.cuda().log_prob(u, paths).cpu(), cpu, rtol=1e-4, atol=1e-5)
