"""`emprobe plan`: how many samples a comparison or a precise rate needs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from emprobe.stats import samples_for_halfwidth, samples_per_arm


def plan(
    base_rate: Annotated[float, typer.Option("--base-rate", min=0.0, max=1.0,
                                             help="Expected misalignment rate of arm 1.")],
    rate: Annotated[float, typer.Option("--rate", min=0.0, max=1.0,
                                        help="Rate of arm 2 to be detected against the base.")],
    power: Annotated[float, typer.Option(help="Probability of detecting the difference.")] = 0.8,
    alpha: Annotated[float, typer.Option(help="Two-sided false-positive rate.")] = 0.05,
    halfwidth: Annotated[
        float | None, typer.Option(help="Also size each arm for a 95% Wilson interval of this half-width.")
    ] = None,
) -> None:
    """Print the samples per arm needed to tell --rate from --base-rate (pooled two-proportion z-test)."""
    try:
        per_arm = samples_per_arm(base_rate, rate, power=power, alpha=alpha)
        per_arm_exact = samples_per_arm(base_rate, rate, power=power, alpha=alpha, continuity_correction=True)
        precise = (
            None
            if halfwidth is None
            else (samples_for_halfwidth(base_rate, halfwidth), samples_for_halfwidth(rate, halfwidth))
        )
    except ValueError as err:  # the statistics name their arguments; the user typed options
        message = str(err)
        for argument, option in (("p1 and p2", "--base-rate and --rate"), ("p1", "--base-rate"), ("p2", "--rate"),
                                 ("power", "--power"), ("alpha", "--alpha"), ("halfwidth", "--halfwidth")):
            message = message.replace(argument, option)
        raise typer.BadParameter(message) from err

    table = Table(title=f"Plan: {base_rate:g} vs {rate:g} (power {power:g}, alpha {alpha:g}, two-sided)")
    table.add_column("target")
    table.add_column("samples", justify="right")
    table.add_row("samples per arm (z-test)", str(per_arm))
    table.add_row("samples per arm (Fisher, continuity-corrected)", str(per_arm_exact))
    table.add_row("expected events per arm", f"{base_rate * per_arm:.1f} / {rate * per_arm:.1f}")
    if precise is not None:
        table.add_row(f"samples for ±{halfwidth:g} at {base_rate:g}", str(precise[0]))
        table.add_row(f"samples for ±{halfwidth:g} at {rate:g}", str(precise[1]))
    Console().print(table)
