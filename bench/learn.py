"""How long the Learn tab's run takes: a copy of the shipped model learns the coffee photo with its hand-drawn mug
(a class it never saw), as the page runs it (`ssd.learn.HeadTraining`, the default recipe).

    python bench/learn.py [--steps 30] [--threads 2 1] [--repeat 1]

For each thread count (torch's intra-op threads; the app runs with torch's default, one per core), prints the
time of each stage: making the copy and running the frozen layers on the photo, the augmented views (the frozen
layers once per view), the steps (the heads' last layers, forward and backward, on every view), in all; and what
the run ends with: the loss at the first and last step, the copy's best mug on the photo. A one-step run first
(not shown) pays for lazy initialisation. Then what the cached
views save: one pass of the frozen layers over as many views as a step trains on, which is what every step would
add if it drew fresh views, against one step. The machine's load average is printed before and after: on a
loaded machine (another process on the cores) two threads can be several times slower than one.

No figure here is a test: tests/test_learn.py checks what the run does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ssd  # noqa: E402
from ssd.learn import HeadTraining, LearnRecipe  # noqa: E402
from visualize.examples import example_image  # noqa: E402
from visualize.learn import learning_rows  # noqa: E402


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def one_run(network, class_names, steps: int, score: float) -> dict:
    coffee = example_image("coffee")
    rows = learning_rows("coffee")
    t0 = time.perf_counter()
    run = HeadTraining(network, class_names, coffee, np.array([r[1:] for r in rows], np.float32), [r[0] for r in rows],
                       LearnRecipe(steps=steps))
    t1 = time.perf_counter()
    for _ in run.prepare():
        pass
    t2 = time.perf_counter()
    history, step_times = [], []
    for _ in range(steps):
        s = time.perf_counter()
        history.append(run.step())
        step_times.append(time.perf_counter() - s)
    t3 = time.perf_counter()
    # What fresh views per step would add: the frozen layers over as many views as a step trains on.
    images = torch.stack([torch.from_numpy(np.ascontiguousarray(run.augmented(v)[0])).permute(2, 0, 1)
                          for v in range(run.recipe.views)])
    s = time.perf_counter()
    run._frozen(images, [], [])
    frozen = time.perf_counter() - s
    mugs = [d for d in run.detector({"score_threshold": score}).detect(coffee) if d.label == "mug"]
    return {"setup": t1 - t0, "views": t2 - t1, "steps": t3 - t2, "total": t3 - t0,
            "step": statistics.median(step_times), "frozen": frozen, "first": history[0].loss,
            "last": history[-1].loss, "mug": max((d.score for d in mugs), default=0.0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=LearnRecipe().steps)
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads(), 1])
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    served = ssd.Detector.load(backend="torch", device="cpu")
    network = served.model
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, load average {load()} (1, 5, 15 min)")
    print(f"{served.config.name}, {args.steps} steps on {LearnRecipe().views} augmented views of the coffee photo "
          f"(600×400) with its mug")
    print(f"{'threads':>7} {'copy+photo':>10} {'views':>7} {'steps':>7} {'total':>7} {'a step':>7} "
          f"{'frozen×views':>12} {'loss 1→last':>13} {'mug':>5}")
    one_run(network, served.class_names, 1, served.score_threshold)  # lazy initialisation, not timed
    for threads in args.threads:
        torch.set_num_threads(threads)
        for _ in range(args.repeat):
            r = one_run(network, served.class_names, args.steps, served.score_threshold)
            print(f"{threads:>7} {r['setup']:>9.1f}s {r['views']:>6.1f}s {r['steps']:>6.1f}s {r['total']:>6.1f}s "
                  f"{r['step']:>6.2f}s {r['frozen']:>11.1f}s {r['first']:>6.2f}→{r['last']:<5.2f} {r['mug']:>5.2f}",
                  flush=True)
    print(f"load average after: {load()}")
    print("frozen×views: one pass of the frozen layers over the views a step trains on, what each step would add "
          "with fresh views")
    return 0


if __name__ == "__main__":
    sys.exit(main())
