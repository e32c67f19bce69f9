"""Cost of one sandwich step (4 subnets) against one full-width step: time and tensor memory.

Also compares sliced-gradient accumulation in place (`set_in_place_grad(True)`, the trainer's default)
with autograd's slicing, which allocates a full-size zero gradient per sliced weight per subnet.
Memory is measured with `tailor.train.memory.TensorMemory` (every tensor created inside the step),
plus the model's parameters and buffers, which are alive throughout.

    python benchmarks/training_step.py [--model resnet20] [--batch 64] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tailor import create_model
from tailor.train import TrainConfig, Trainer
from tailor.train.memory import TensorMemory, parameter_bytes


class _Batch(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.images, self.labels = x, y

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10)
    c, h, w = model.default_input_size
    x = torch.randn(args.batch, c, h, w)
    y = torch.randint(0, 10, (args.batch,))
    space = model.space
    plans = {
        "full-width step (1 subnet)": [space.largest()],
        "sandwich step (4 subnets)": [space.largest(), space.smallest(), space.sample(1), space.sample(2)],
    }
    device = torch.device(args.device)
    xs, ys = x.to(device), y.to(device)
    print(f"{args.model}, batch {args.batch}, {args.threads} threads, device {device}; medians of {args.repeats}")
    print(f"parameters + buffers: {parameter_bytes(model) / 2**20:.1f} MiB\n")
    header = f"{'step':<30} {'grads':<9} {'median ms':>10} {'peak MiB':>9} {'allocated MiB':>14} {'allocations':>12}"
    print(header)
    print("-" * len(header))
    rows: dict[tuple[str, bool], tuple[float, int, int, int]] = {}
    for in_place in (False, True):
        trainer = Trainer(
            model, _Batch(x, y), TrainConfig(batch_size=args.batch, in_place_grad=in_place), device=device
        )
        for label, subs in plans.items():
            trainer.train_step(xs, ys, subs, True)  # warm-up
            times = []
            for _ in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                trainer.train_step(xs, ys, subs, True)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - start) * 1e3)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                trainer.train_step(xs, ys, subs, True)
                peak, allocated, count = torch.cuda.max_memory_allocated() - base, 0, 0
            else:
                with TensorMemory() as memory:
                    trainer.train_step(xs, ys, subs, True)
                report = memory.report
                peak, allocated, count = report.peak_bytes, report.allocated_bytes, report.allocations
            peak += parameter_bytes(model)
            median = statistics.median(times)
            rows[(label, in_place)] = (median, peak, allocated, count)
            mode = "in place" if in_place else "autograd"
            print(f"{label:<30} {mode:<9} {median:>10.1f} {peak / 2**20:>9.1f} {allocated / 2**20:>14.1f} {count:>12}")
    full, sandwich = plans
    print()
    for in_place in (False, True):
        mode = "in-place grads" if in_place else "autograd grads"
        a, b = rows[(full, in_place)], rows[(sandwich, in_place)]
        print(f"sandwich / full-width ({mode}): time {b[0] / a[0]:.2f}x, peak memory {b[1] / a[1]:.2f}x")
    a, b = rows[(sandwich, False)], rows[(sandwich, True)]
    print(
        f"sandwich step, in place vs autograd: {(a[2] - b[2]) / 2**20:.1f} MiB and {a[3] - b[3]} allocations fewer, "
        f"time {b[0] / a[0]:.2f}x"
    )


if __name__ == "__main__":
    main()
