"""The command line's shared options and value types."""

from __future__ import annotations

import math

import click

from hetmap.passes.sensitivity import FIRST_ORDER_FROM_LAYERS, METHODS
from hetmap.sim.jobs import default_worker_count
from hetmap.sim.metrics import METRICS

metric_option = click.option(
    "--metric",
    type=click.Choice(METRICS),
    default="auto",
    show_default=True,
    help="How outputs are scored: top-1 (per position for sequences), cosine, snr; auto chooses from the output.",
)


def workers_options(command):
    """--workers and --ray: where the independent measurements run."""
    command = click.option(
        "--ray",
        "ray_address",
        metavar="ADDRESS",
        help="Run measurements on the Ray cluster at ADDRESS (ray://HOST:10001, auto, or local); needs hetmap[ray].",
    )(command)
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=default_worker_count,
        show_default="the machine's cores",
        help="Processes for independent measurements (sensitivity's layers, run's draws); 1: serial.",
    )(command)


class FiniteFloat(click.FloatRange):
    """A float flag that refuses nan and inf (click's FloatRange lets nan through every bound)."""

    def convert(self, value, param, context):
        number = super().convert(value, param, context)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, context)
        return number


class LearningRate(FiniteFloat):
    """A positive finite rate, or `auto`: a short sweep picks it."""

    name = "rate or auto"

    def convert(self, value, param, context):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return super().convert(value, param, context)


sensitivity_option = click.option(
    "--sensitivity",
    "sensitivity",
    type=click.Choice(METHODS),
    default="auto",
    show_default=True,
    help="How each layer's options are measured: exact (simulated; samples that cannot flip skipped), first-order "
    "(predicted from each layer's simulated change and one backward pass; options too large for it simulated); "
    f"auto: first-order from {FIRST_ORDER_FROM_LAYERS} mappable layers on.",
)
