"""The most any further work on the protocol's refusal path could add to goodput under a burst.

Under a 10x burst the front end reads ~30,000 requests a second and refuses nearly all of them from their raw
bytes (`ArrivalStampingProtocol._refuse_known`, `InferenceServer.refusal`): checks, admission's horizon,
counting, the prebuilt 503. How much of the burst's goodput does that Python cost? This script copies this
checkout's `src/` into a temporary folder and strips the refusal path there down to a ceiling no real
implementation can beat: within one pass of the event loop, once a read has been refused, every later read of
the same length that starts with the same header block is answered with the same 503 at the top of
`data_received` (a length check, a prefix check and the write: no admission, no counting, no deadline check).
It then runs `overload.py` at one fixed rate, alternating the real code (A) and the ceiling (B) on the same
profile, and prints the on-time answers per second of each pair side by side with the medians and their ratio.
What remains in B is what no change to tailor's Python could remove: uvloop's reads and writes, the kernel's
loopback TCP, and the admitted requests. The ceiling is not a server anyone should run (its `/metrics` does not
count what it refuses): it exists only in the temporary copy, which is removed afterwards.

    python benchmarks/refusal_ceiling.py --runtime onnxruntime --capacity 3000 --pairs 4   # ~7 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = Path("src/tailor/serve/server/app.py")

# (what the code says, what the ceiling says instead); each must be found exactly once
CEILING_EDITS = [
    ("    def _end_refusal_run(self) -> None:\n",
     "    def _end_refusal_run(self) -> None:\n        CEILING[0] = None\n"),
    ("def arrival_stamping_protocol(",
     "CEILING: list = [None, -1, b\"\"]  # the 503 of this pass, the read's length, its header block\n\n\n"
     "def arrival_stamping_protocol("),
    ("        def data_received(self, data: bytes) -> None:\n",
     "        def data_received(self, data: bytes) -> None:\n"
     "            if CEILING[0] is not None and len(data) == CEILING[1] and data.startswith(CEILING[2]):\n"
     "                self.transport.write(CEILING[0])\n"
     "                return\n"),
    ("            answer = shedder.refusal(arrival_clock())\n            if answer is None:\n"
     "                self._admitted_in_read = self._reads  # `on_headers_complete`, in this read, need not ask again\n"
     "                return False\n",
     "            answer = shedder.refusal(arrival_clock())\n            if answer is None:\n"
     "                self._admitted_in_read = self._reads  # `on_headers_complete`, in this read, need not ask again\n"
     "                return False\n"
     "            if CEILING[0] is None:\n"
     "                CEILING[0], CEILING[1], CEILING[2] = answer, len(data), data[:start]\n"),
]


def make_ceiling(tree: Path) -> None:
    """Apply `CEILING_EDITS` to the copy's app.py; SystemExit naming the edit if the code has moved on."""
    path = tree / APP
    text = path.read_text()
    for old, new in CEILING_EDITS:
        if text.count(old) != 1:
            raise SystemExit(f"refusal_ceiling: app.py no longer holds (once) the code this edit replaces:\n{old}")
        text = text.replace(old, new)
    path.write_text(text)


def run_overload(args: argparse.Namespace, source: Path, out: Path) -> float:
    """On-time answers per second during the burst, with the server's code taken from `source`/src."""
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    command = [sys.executable, str(ROOT / "benchmarks" / "overload.py"), "--workdir", args.workdir, "--runtimes",
               args.runtime, "--capacity", str(args.capacity), "--factors", str(args.factor), "--reuse-profile",
               "--out", str(out)]
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"overload.py failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    (burst,) = json.loads(out.read_text())["runtimes"][args.runtime]["bursts"]
    return float(burst["goodput_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="onnxruntime", choices=("torch-inplace", "onnxruntime"))
    parser.add_argument("--capacity", type=float, required=True, help="C (req/s), e.g. from a full overload.py run")
    parser.add_argument("--factor", type=float, default=10.0, help="the burst's rate over C")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--workdir", default=str(ROOT / ".cache" / "overload"),
                        help="overload.py's --workdir, holding a profile from an earlier run (it is reused)")
    args = parser.parse_args()
    if args.pairs < 1 or args.capacity <= 0:
        parser.error("--pairs must be >= 1 and --capacity > 0")
    if not (Path(args.workdir) / f"profile-{args.runtime}.json").is_file():
        parser.error(f"no profile in {args.workdir}: run `python benchmarks/overload.py` once first")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="refusal_ceiling_") as scratch:
        tree = Path(scratch) / "ceiling"  # a copy of this checkout's src/, as it is now, with the edits
        shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        make_ceiling(tree)
        real, ceiling = [], []
        for pair in range(args.pairs):
            real.append(run_overload(args, ROOT, Path(scratch) / f"a{pair}.json"))
            ceiling.append(run_overload(args, tree, Path(scratch) / f"b{pair}.json"))
            print(f"pair {pair + 1}: code {real[-1]:7.0f}/s   ceiling {ceiling[-1]:7.0f}/s   "
                  f"(C = {args.capacity:g}: {real[-1] / args.capacity:.2f} C / {ceiling[-1] / args.capacity:.2f} C)",
                  flush=True)
    a, b = statistics.median(real), statistics.median(ceiling)
    print(f"median on time per second: code {a:.0f} ({a / args.capacity:.2f} C), ceiling {b:.0f} "
          f"({b / args.capacity:.2f} C), ceiling / code {b / a:.2f}; load average {load_before[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
