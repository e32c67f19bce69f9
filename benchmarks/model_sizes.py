"""Full-width size of every registered model against the published architecture.

Prints parameters and MACs (FlopCounterMode FLOPs / 2, as papers report MACs) at each model's
design input size (224x224 ImageNet with 1000 classes, 32x32 CIFAR with 10; the ViTs' attention products
are counted: tailor's attention uses explicit matrix products), the published figures
and the relative error, plus the size of each model's search space.

    python benchmarks/model_sizes.py
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

import tailor

# (parameters, MACs) as published; None where no reference figure exists (small_cnn is ours)
PUBLISHED: dict[str, tuple[float, float] | None] = {
    "resnet18": (11.69e6, 1.82e9),
    "resnet50": (25.56e6, 4.09e9),
    "resnet20": (0.27e6, 41e6),
    "resnet32": (0.46e6, 69e6),
    "resnet56": (0.85e6, 125e6),
    "mobilenet_v2": (3.50e6, 300e6),
    "mobilenet_v3_large": (5.48e6, 219e6),
    "mobilenet_v3_small": (2.54e6, 56e6),
    "efficientnet_b0": (5.29e6, 390e6),
    "small_cnn": None,
    # DeiT: 5.7 M / 1.3 GFLOPs (fvcore counts a multiply-add as one FLOP: 1.26 G MACs); 22.1 M / 4.6 G
    "vit_tiny": (5.7e6, 1.26e9),
    "vit_small": (22.1e6, 4.6e9),
    "vit_micro": None,
}


def main() -> None:
    torch.set_num_threads(2)
    print(
        f"{'model':<20} {'params':>10} {'published':>10} {'err':>7} {'MACs':>10} {'published':>10} {'err':>7} "
        f"{'search_dim':>10} {'subnets':>10}"
    )
    for name in tailor.list_models():
        model = tailor.create_model(name).eval()
        params = sum(p.numel() for p in model.parameters())
        x = torch.randn(1, *model.default_input_size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.extract(model.space.largest())(x)
        macs = counter.get_total_flops() / 2
        ref = PUBLISHED.get(name)
        ref_params = f"{ref[0] / 1e6:.2f}M" if ref else "-"
        ref_macs = f"{ref[1] / 1e6:.0f}M" if ref else "-"
        err_params = f"{100 * (params - ref[0]) / ref[0]:+.1f}%" if ref else "-"
        err_macs = f"{100 * (macs - ref[1]) / ref[1]:+.1f}%" if ref else "-"
        size = model.space.size
        print(
            f"{name:<20} {params / 1e6:>9.2f}M {ref_params:>10} {err_params:>7} {macs / 1e6:>9.1f}M {ref_macs:>10} "
            f"{err_macs:>7} {model.space.search_dim:>10} {size if size is not None else 'cont.':>10.2e}"
        )


if __name__ == "__main__":
    main()
