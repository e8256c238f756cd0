"""`emprobe plan` registered on a throwaway Typer app: the printed numbers are the planner's."""

import re

import typer
from typer.testing import CliRunner

from emprobe.cli.plan import plan
from emprobe.stats import samples_for_halfwidth, samples_per_arm


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("plan")(plan)
    app.command("noop")(lambda: None)  # a second command keeps `plan` as a named subcommand
    return app


def _invoke(args: list[str]):
    return CliRunner().invoke(_app(), args, env={"COLUMNS": "120"})  # wide enough that no row wraps


def _row(output: str, label: str) -> int:
    line = next(line for line in output.splitlines() if label in line)
    return int(re.findall(r"\d+", line.split(label, 1)[1])[-1])


def test_plan_prints_samples_per_arm():
    result = _invoke(["plan", "--base-rate", "0.0007", "--rate", "0.0068"])
    assert result.exit_code == 0, result.output
    assert _row(result.output, "samples per arm (z-test)") == samples_per_arm(0.0007, 0.0068) == 1575
    fisher = samples_per_arm(0.0007, 0.0068, continuity_correction=True)
    assert _row(result.output, "samples per arm (Fisher") == fisher
    assert "±" not in result.output


def test_plan_with_power_alpha_and_halfwidth():
    args = ["plan", "--base-rate", "0.0042", "--rate", "0.0096", "--power", "0.9", "--alpha", "0.01"]
    result = _invoke([*args, "--halfwidth", "0.002"])
    assert result.exit_code == 0, result.output
    assert _row(result.output, "samples per arm (z-test)") == samples_per_arm(0.0042, 0.0096, 0.9, 0.01)
    assert _row(result.output, "±0.002 at 0.0042") == samples_for_halfwidth(0.0042, 0.002)
    assert _row(result.output, "±0.002 at 0.0096") == samples_for_halfwidth(0.0096, 0.002)


def test_plan_rejects_equal_rates():
    result = _invoke(["plan", "--base-rate", "0.01", "--rate", "0.01"])
    assert result.exit_code != 0
    assert "must differ" in result.output
