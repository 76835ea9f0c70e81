"""Sensitivity's default engine against the whole-model path (issue 16's "today's path"), in one process.

The whole path simulates the whole network for every layer, option and draw;
on ResNet-50 at 128 samples that takes most of an hour, so it runs on
`--subset` evenly spaced layers and its time is scaled by layers / subset (each
of its measurements runs the same whole network, so the time per layer varies
little). The default engine (`auto`: first-order from 40 layers on, the exact
engines for the options out of its linear regime, the budget stop at 0.5
points, as compile runs it) measures every layer. Drops are compared on the
subset: the largest difference (first-order's options are predicted), and
whether each option the default engine stopped early is over the budget in
the whole path's measurement too.

    python -m bench.whole_path [--samples 128] [--subset 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from bench.sensitivity_speed import RESULTS, _resnet50, calibrated, save
from hetmap.passes.sensitivity import Sensitivity
from hetmap.sim.measure import Measurement

BUDGET = 0.5  # points: compile's default --max-drop, where the default engine stops an option


def measure(samples: int, subset: int) -> dict:
    model, context = calibrated(*_resnet50(samples))
    partition = context.reports["partition"]
    picks = np.linspace(0, len(partition.layers) - 1, subset).round().astype(int)
    some = dataclasses.replace(partition, layers=[partition.layers[i] for i in picks])
    on_subset = context.with_reports({**context.reports, "partition": some})
    began = time.perf_counter()
    _, whole = Sensitivity(Measurement("1d", seeds=3), "whole", None).run(model, on_subset)
    whole_s = time.perf_counter() - began
    began = time.perf_counter()
    _, default = Sensitivity(Measurement("1d", seeds=3), "auto", BUDGET).run(model, context)
    default_s = time.perf_counter() - began
    compared = [
        (whole.layers[layer.name][o], default.layers[layer.name][o])
        for layer in some.layers
        for o in whole.layers[layer.name]
    ]
    estimate = whole_s * len(partition.layers) / subset
    return {
        "layers": len(partition.layers),
        "samples": samples,
        "subset": [layer.name for layer in some.layers],
        "whole_subset_s": whole_s,
        "whole_estimate_s": estimate,
        "default_s": default_s,
        "speedup": estimate / default_s,
        # first-order predicts its options, so their drops may differ a little; an early stop is a lower bound
        "largest_difference_points": max(
            (abs(a.drop_points - b.drop_points) for a, b in compared if not b.at_least), default=0.0
        ),
        "stopped_over_budget_in_both": all(a.drop_points > BUDGET for a, b in compared if b.at_least),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=128, help="ResNet-50's decision samples (a 256-sample compile's)"
    )
    parser.add_argument("--subset", type=int, default=6, help="layers the whole path runs on")
    parser.add_argument("--out", type=Path, default=RESULTS / "whole_path.json")
    args = parser.parse_args(argv)
    result = measure(args.samples, args.subset)
    print(
        f"ResNet-50, {result['samples']} samples: whole path {result['whole_subset_s']:.1f} s on {args.subset} layers"
        f" -> {result['whole_estimate_s']:.0f} s for {result['layers']}; default engine {result['default_s']:.1f} s;"
        f" {result['speedup']:.2f}x; drops differ by at most {result['largest_difference_points']:.2f} points,"
        f" early stops over the budget in both: {result['stopped_over_budget_in_both']}"
    )
    return save(result, args.out)


if __name__ == "__main__":
    main()
