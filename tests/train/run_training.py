"""Subprocess entry point of the resume and distributed tests: a short deterministic training run.

usage: python run_training.py CHECKPOINT_DIR KILL_AT_GLOBAL_STEP(-1: never) [--norm-free] [--dump FILE]
"""

from __future__ import annotations

import argparse
import os
import signal

import torch
from safetensors.torch import save_file

from tailor import create_model
from tailor.train import TrainConfig, Trainer
from train_helpers import BlobImages, NormFreeNet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("kill_at", type=int)
    parser.add_argument("--norm-free", action="store_true")
    parser.add_argument("--dump", default=None, help="write this rank's final weights here (suffix .rankN)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = NormFreeNet() if args.norm_free else create_model("small_cnn", num_classes=4, channels=(8, 16, 16))
    # augmentation draws per rank, so only un-augmented runs can match across process counts
    config = TrainConfig(
        epochs=2,
        batch_size=args.batch_size,
        lr=0.05,
        checkpoint_every=2,
        seed=7,
        calib_batches=2,
        augment=not args.norm_free,
    )

    def kill(trainer: Trainer, record: dict) -> None:
        if record["global_step"] == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(
        model,
        BlobImages(192, seed=1),
        config,
        eval_data=BlobImages(64, seed=2),
        checkpoint_dir=args.checkpoint,
        resume=True,
        callbacks=[kill],
        device="cpu",
    )
    trainer.fit()
    if args.dump:
        rank = os.environ.get("RANK", "0")
        save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, f"{args.dump}.rank{rank}")


if __name__ == "__main__":
    main()
