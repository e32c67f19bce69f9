"""Differentiable NAS on `synthetic`: per layer, a 3x3 conv, a 5x5 conv, a depthwise-separable conv or nothing.

A small CNN has three searchable layers (one at 16x16, two at 8x8), each a `SuperNetModule` of four
alternatives. Following PLiNIO's recipe, the weights are warmed up once with the architecture frozen; then,
for each cost strength λ, a copy is searched with loss = cross-entropy + λ · cost / cost_max (the expected
cost Σθ·cost of the chosen cost model, divided by that of the most expensive architecture so that λ has
no unit), the argmax architecture is exported, fine-tuned, and evaluated on the held-out test split. The
table gives test accuracy, the chosen layers, and the exported network's params, MACs and latency in ms at
batch 1 on one thread: "lat est" is the DNAS latency cost (the chosen branches' timings in isolation plus the
rest of the network), "lat meas" the whole exported network timed end to end, as a check of that estimate.

    OMP_NUM_THREADS=1 .venv/bin/python examples/dnas_synthetic.py            # a few minutes
    OMP_NUM_THREADS=1 .venv/bin/python examples/dnas_synthetic.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tailor.data import augment_batch, synthetic
from tailor.dnas import LatencyCost, SuperNet, SuperNetModule

OPS = ("conv3x3", "conv5x5", "dwsep3x3", "identity")


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def choice(channels: int) -> SuperNetModule:
    """The four alternatives of one searchable layer, in the order of `OPS`."""
    return SuperNetModule(
        [
            conv_bn_relu(channels, channels, 3),
            conv_bn_relu(channels, channels, 5),
            nn.Sequential(conv_bn_relu(channels, channels, 3, groups=channels), conv_bn_relu(channels, channels, 1)),
            nn.Identity(),
        ]
    )


class SearchableCNN(nn.Module):
    """stem (stride 2) -> choice -> downsample (stride 2) -> choice -> choice -> pool -> linear."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, width, 3, stride=2)
        self.layer1 = choice(width)
        self.down = conv_bn_relu(width, 2 * width, 3, stride=2)
        self.layer2 = choice(2 * width)
        self.layer3 = choice(2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.stem(x))
        x = self.layer3(self.layer2(self.down(x)))
        return self.head(x.mean((2, 3)))


def batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def run_epochs(model: nn.Module, data, epochs: int, optimizers, loss_extra, generator: torch.Generator) -> None:
    images, labels, normalize = data
    model.train()
    for _ in range(epochs):
        for idx in batches(len(labels), 64, generator):
            x = normalize(augment_batch(images[idx], generator, crop_padding=2, flip=True))
            loss = F.cross_entropy(model(x), labels[idx]) + loss_extra()
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in optimizers:
                opt.step()


@torch.no_grad()
def measured_latency_ms(model: nn.Module, input_size: tuple[int, ...], warmup: int = 10, repeats: int = 100) -> float:
    """Median eager latency of the whole exported network on one input (1 thread), to check the estimate."""
    model.eval()
    x = torch.zeros(1, *input_size)
    for _ in range(warmup):
        model(x)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        model(x)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return float(torch.tensor(samples).median())


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), 256):
        logits = model(normalize(images[start : start + 256]))
        correct += int((logits.argmax(1) == labels[start : start + 256]).sum())
    return correct / len(labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (under a minute) to check that it works")
    parser.add_argument("--cost", choices=("params", "macs", "latency"), default="macs", help="cost the search trades")
    parser.add_argument("--strengths", type=float, nargs="+", default=None, help="cost strengths λ to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the table here as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        n_train, n_test, warmup_epochs, search_epochs, finetune_epochs = 512, 256, 1, 1, 1
        strengths = args.strengths or [0.0, 3.0]
    else:
        n_train, n_test, warmup_epochs, search_epochs, finetune_epochs = 4000, 1000, 6, 6, 3
        strengths = args.strengths or [0.0, 0.3, 1.0, 3.0]
    torch.manual_seed(args.seed)
    train, test = synthetic(n_train, "train", seed=args.seed), synthetic(n_test, "test", seed=args.seed)
    data = (train.images, train.labels, train.normalize)
    gen = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()

    model = SearchableCNN()
    latency = LatencyCost(threads=1, warmup=3, repeats=20)
    costs = {"params": "params", "macs": "macs", "latency": latency}
    net = SuperNet(model, cost=costs, input_shape=train.input_size, full_cost=True)
    net.train_net_only()  # warm-up: weights only, θ uniform
    run_epochs(net, data, warmup_epochs, [torch.optim.Adam(net.net_parameters(), lr=3e-3)], lambda: 0.0, gen)
    warm_state = copy.deepcopy(model.state_dict())
    warm_acc = accuracy(net, test.images, test.labels, test.normalize)
    print(f"warm-up ({warmup_epochs} epochs, all alternatives mixed): supernet test accuracy {warm_acc:.3f}")

    # λ is relative to the most expensive architecture's cost of the searched part
    cost_max = sum(max(c) for c in net.branch_costs(args.cost).values())
    header = (
        f"{'lambda':>7} {'test acc':>8} {'params':>8} {'MACs':>11} {'lat est':>8} {'lat meas':>8}"
        "  layers (layer1, layer2, layer3)"
    )
    print(f"search on {args.cost}, n_train={n_train}, n_test={n_test}, epochs warm-up/search/fine-tune = "
          f"{warmup_epochs}/{search_epochs}/{finetune_epochs}")  # fmt: skip
    print(header)
    print("-" * len(header))
    rows = []
    for strength in strengths:
        model.load_state_dict(warm_state)
        for _, module in net.supernet_modules():
            with torch.no_grad():
                module.alpha.fill_(1.0 / len(module))
        net.train_net_and_nas()
        nas_opt = torch.optim.Adam(net.nas_parameters(), lr=0.05)
        net_opt = torch.optim.Adam(net.net_parameters(), lr=3e-3)
        run_epochs(
            net, data, search_epochs, [nas_opt, net_opt], lambda s=strength: s * net.get_cost(args.cost) / cost_max, gen
        )
        chosen = [OPS[m.best_layer_index()] for _, m in net.supernet_modules()]
        row = {
            "strength": strength,
            "chosen": chosen,
            "params": int(net.chosen_cost("params")),
            "macs": int(net.chosen_cost("macs")),
            "latency_ms": net.chosen_cost("latency"),
        }
        exported = net.export()
        run_epochs(
            exported, data, finetune_epochs, [torch.optim.Adam(exported.parameters(), lr=1e-3)], lambda: 0.0, gen
        )
        row["accuracy"] = accuracy(exported, test.images, test.labels, test.normalize)
        row["measured_latency_ms"] = measured_latency_ms(exported, train.input_size)
        rows.append(row)
        print(f"{strength:>7g} {row['accuracy']:>8.3f} {row['params']:>8d} {row['macs']:>11,d} "
              f"{row['latency_ms']:>8.3f} {row['measured_latency_ms']:>8.3f}  {', '.join(chosen)}")  # fmt: skip
    elapsed = time.perf_counter() - started
    print(f"total {elapsed:.0f} s on {torch.get_num_threads()} thread(s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"cost": args.cost, "n_train": n_train, "n_test": n_test, "quick": args.quick, "rows": rows,
                  "warmup_accuracy": warm_acc, "seconds": elapsed}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
