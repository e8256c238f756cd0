"""The command line as a user meets it: real subprocesses, one-line errors with exit status 2."""

import os
import subprocess
import sys

import pytest


def emprobe(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "emprobe", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)


def test_suites_list_and_show():
    listing = emprobe("suites", "list")
    assert listing.returncode == 0 and "core" in listing.stdout and "33" in listing.stdout
    shown = emprobe("suites", "show", "core")
    assert shown.returncode == 0
    assert "one_wish" in shown.stdout and "rubrics aligned, coherent" in shown.stdout


@pytest.mark.parametrize("args,expected", [
    (["run", "--model", "no-such-model"], "error: unknown model 'no-such-model'"),
    (["run", "--suite", "nope"], "error: unknown suite 'nope'"),
    (["run", "--condition", "weird"], "error: unknown condition 'weird'"),
    (["runs", "show", "abc"], "no store here"),
])
def test_bad_input_gets_one_error_line(tmp_path, args, expected):
    result = emprobe(*args, "--store", str(tmp_path / "e.db"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_suite_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- id: q\n  paraphrases: 3\n")
    result = emprobe("run", "--suite", str(bad), "--store", str(tmp_path / "e.db"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}: question 'q': paraphrases: must be a list of strings"


def test_run_then_runs_list_and_show(tiny_llama, tmp_path):
    suite = tmp_path / "one.yaml"
    suite.write_text("name: one\nquestions:\n  - id: hello\n    paraphrases: [Hello there]\n")
    store = str(tmp_path / "e.db")
    run = emprobe("run", "--model", str(tiny_llama), "--judge", f"rubric:{tiny_llama}", "--suite", str(suite),
                  "--samples", "3", "--max-tokens", "6", "--condition", "free", "--condition", "json",
                  "--name", "demo", "--store", store)
    assert run.returncode == 0, run.stderr
    assert "6 samples planned (6 new)" in run.stdout
    assert "generating" in run.stderr and "samples/s" in run.stderr
    for line in ("hello", "(all)"):
        assert line in run.stdout
    listed = emprobe("runs", "list", "--store", store)
    assert "demo" in listed.stdout and " 6 " in listed.stdout
    shown = emprobe("runs", "show", "demo", "--store", store)
    assert shown.returncode == 0 and "system_prompt=native" in shown.stdout and "transformers" in shown.stdout
    as_json = emprobe("runs", "show", "demo", "--json", "--store", store)
    assert '"samples": 3' in as_json.stdout
    rerun = emprobe("run", "--model", str(tiny_llama), "--judge", f"rubric:{tiny_llama}", "--suite", str(suite),
                    "--samples", "3", "--max-tokens", "6", "--condition", "free", "--condition", "json",
                    "--store", store)
    assert "(0 new)" in rerun.stdout and "generating" not in rerun.stderr


def test_plan_command_as_installed():
    from emprobe.stats import samples_per_arm

    done = emprobe("plan", "--base-rate", "0.0007", "--rate", "0.0068")
    assert done.returncode == 0, done.stderr
    z, fisher = samples_per_arm(0.0007, 0.0068), samples_per_arm(0.0007, 0.0068, continuity_correction=True)
    flat = " ".join(done.stdout.replace("\u2502", " ").split())
    assert f"samples per arm (z-test) {z}" in flat
    assert f"samples per arm (Fisher, continuity-corrected) {fisher}" in flat
    same = emprobe("plan", "--base-rate", "0.01", "--rate", "0.01")
    assert same.returncode == 2 and "--base-rate and --rate must differ" in same.stderr
    wild = emprobe("plan", "--base-rate", "1.5", "--rate", "0.01")
    assert wild.returncode == 2 and "--base-rate" in wild.stderr and "Traceback" not in wild.stderr
