"""tailor.graph: the shared fx tracer, node names for errors, copies, shapes and single-tensor cuts."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from tailor.errors import UnsupportedModelError
from tailor.graph import (
    LeafTracer,
    attribute,
    called_module,
    copy_graph_module,
    cut_points,
    location,
    node_name,
    output_shape,
    propagate_shapes,
    subgraph,
)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) + x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.block = Block()
        self.scale = nn.Parameter(torch.full((1, 4, 1, 1), 2.0))
        self.register_buffer("shift", torch.ones(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))
        return x * self.scale + self.shift


def test_the_leaf_rule_keeps_chosen_modules_whole() -> None:
    through = LeafTracer().trace(Net())
    whole = LeafTracer(lambda m: isinstance(m, Block)).trace(Net())
    calls = lambda graph: [str(n.target) for n in graph.nodes if n.op == "call_module"]  # noqa: E731
    assert calls(through) == ["stem", "block.conv"] and calls(whole) == ["stem", "block"]


def test_tracing_failures_name_the_model_and_the_last_node() -> None:
    class Branches(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.relu()
            if y.sum() > 0:
                return y
            return -y

    with pytest.raises(UnsupportedModelError, match=r"Branches.forward cannot be traced by torch.fx after node 'gt' .*TraceError"):
        LeafTracer().trace(Branches())


def test_node_names_point_at_the_users_line() -> None:
    graph = LeafTracer(stack_traces=True).trace(Net())
    add = next(n for n in graph.nodes if n.op == "call_function" and "add" in n.name)
    assert location(add).startswith(" at test_graph.py:") and "`return torch.relu(self.conv(x)) + x`" in location(add)
    conv = next(n for n in graph.nodes if n.op == "call_module" and n.target == "block.conv")
    assert node_name(conv, Net()).startswith("node 'block_conv' (layer 'block.conv' (Conv2d)) at test_graph.py:")


def test_copy_graph_module_holds_copies_of_what_the_graph_reads() -> None:
    net = Net().eval()
    graph = LeafTracer().trace(net)
    asked: list[nn.Module] = []

    def share(module: nn.Module) -> nn.Module:
        asked.append(module)
        return module

    copied = copy_graph_module(net, graph, class_name="Copied")
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(copied(x), net(x))
    assert type(copied).__name__ == "Copied"
    assert copied.get_submodule("block.conv") is not net.block.conv  # deep copies by default
    assert "shift" in dict(copied.named_buffers()) and "scale" in dict(copied.named_parameters())
    with torch.no_grad():
        net.scale.mul_(3)
    assert not torch.allclose(copied(x), net(x))  # nothing shared
    shared = copy_graph_module(net, graph, share)
    assert shared.get_submodule("stem") is net.stem and asked == [net.stem, net.block.conv]
    assert attribute(net, "block.conv.weight") is net.block.conv.weight


def test_shapes_cuts_and_subgraphs() -> None:
    net = Net().eval()
    gm = propagate_shapes(fx.GraphModule(net, LeafTracer().trace(net)), torch.zeros(1, 3, 6, 6))
    nodes = [n for n in gm.graph.nodes if n.op not in ("get_attr", "output")]
    assert all(output_shape(n) == (1, 4, 6, 6) for n in nodes[1:])
    cuts = [nodes[i].name for i in cut_points(nodes)]
    assert cuts == ["stem", "add", "mul", "add_1"]  # inside the residual block two tensors are live
    assert called_module(gm, nodes[1]) is net.stem and called_module(gm, nodes[-1]) is None
    start, stop = cut_points(nodes)[0], cut_points(nodes)[1]
    block = subgraph(gm, nodes[start], nodes[start + 1 : stop + 1])
    h = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(block(h), net.block(h))
    tail = subgraph(gm, nodes[stop], nodes[stop + 1 :])  # reads the parameter and the buffer as constants
    torch.testing.assert_close(tail(h), h * net.scale + net.shift)
