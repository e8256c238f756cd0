"""Build harm references for `emprobe judge validate` from labelled third-party data (read in place, never shipped).

    python scripts/harm_references.py OUT_DIR [--pyrit WHEEL] [--shared ../shared/data] [--lat 300]
                                      [--uncensorbench SDIST]

Writes two JSONL files of {question, answer, harmful, source}:
- `harm-pyrit.jsonl`: the objective set of PyRIT's scorer evaluations (`pyrit/datasets/scorer_evals/objective/
  *.csv` in the `pyrit` wheel, MIT, Microsoft): requests for harmful help, each with a model's answer and a
  person's label, 1 = the objective was achieved (harmful: true), 0 = not (refusals, deflections and safe
  answers: harmful: false). Both classes come from people's labels on the same kind of request.
- `harm-mixed.jsonl`: the compliant answers of `../shared/data/harmful-completions` (all of `xstest_harmful`
  and a seeded sample of `lat_harmful`) as positives, and PyRIT's answers labelled not achieved as negatives:
  real refusals and safe answers written by models, labelled by people. The two classes come from different
  sources, so a judge can tell them apart by style as well as by harm; read it beside `harm-pyrit.jsonl`.
- `harm-uncensorbench.jsonl` (with --uncensorbench, the `uncensorbench==0.3.7` sdist from PyPI, MIT): 150
  harmful requests, each with a written refusal (harmful: false) and a written compliant answer (harmful: true).
  Both are reference answers, not any model's output, and labelled by how they were written: a check of
  compliance against refusal, not of harm.

The wheel is `.cache/references/pyrit-1.1.0-py3-none-any.whl` (fetched by `scripts/setup.sh`, or here with pip
from PyPI when missing), or the one given with --pyrit.
"""

import argparse
import csv
import io
import json
import random
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYRIT = "pyrit==1.1.0"
WHEEL = ROOT / ".cache" / "references" / "pyrit-1.1.0-py3-none-any.whl"
OBJECTIVE = "pyrit/datasets/scorer_evals/objective/"


def fetch_wheel() -> Path:
    """The PyRIT wheel, downloaded from PyPI (without its dependencies) when it is not there yet."""
    if not WHEEL.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", PYRIT,
                        "-d", str(WHEEL.parent)], check=True)
    return WHEEL


def pyrit_rows(wheel: Path) -> list[dict]:
    """The objective set's rows: the CSV files after their `#` comment lines."""
    rows = []
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith(OBJECTIVE) and n.endswith(".csv"))
        if not names:
            sys.exit(f"{wheel}: no {OBJECTIVE}*.csv in it (not a PyRIT wheel with scorer evaluations?)")
        for name in names:
            text = archive.read(name).decode("utf-8")
            body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
            for number, record in enumerate(csv.DictReader(io.StringIO(body)), 1):
                label = (record.get("human_score") or "").strip()
                if label not in ("0", "1"):
                    sys.exit(f"{wheel}:{name}: row {number}: human_score is {label!r}, not 0 or 1")
                rows.append({"question": record["objective"], "answer": record["assistant_response"],
                             "harmful": label == "1", "source": f"pyrit:{name.removeprefix(OBJECTIVE)}"})
    return rows


def compliant(path: Path) -> list[dict]:
    """The first user message and assistant answer of each chat record: compliant harmful answers."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            user = next(m["content"] for m in messages if m["role"] == "user")
            answer = next(m["content"] for m in messages if m["role"] == "assistant")
            out.append({"question": user, "answer": answer, "harmful": True, "source": path.name})
    return out


def uncensorbench_rows(sdist: Path) -> list[dict]:
    """Each prompt of UncensorBench twice: with its refusal and with its compliant answer."""
    with tarfile.open(sdist) as archive:
        member = next((m for m in archive.getmembers() if m.name.endswith("uncensorbench/data/prompts.json")), None)
        if member is None:
            sys.exit(f"{sdist}: no uncensorbench/data/prompts.json in it")
        handle = archive.extractfile(member)
        assert handle is not None, "prompts.json is a regular file"
        prompts = json.load(handle)["prompts"]
    return [{"question": p["prompt"], "answer": p[field], "harmful": harmful, "source": f"uncensorbench:{p['id']}"}
            for p in prompts for field, harmful in (("censored_response", False), ("uncensored_response", True))]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    harmful = sum(r["harmful"] for r in rows)
    print(f"{path}: {len(rows)} rows, {harmful} harmful, {len(rows) - harmful} not")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pyrit", type=Path, help="the pyrit wheel (default: fetched into .cache/references)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--lat", type=int, default=300, help="lat_harmful answers sampled as positives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--uncensorbench", type=Path, help="the uncensorbench sdist (pip download --no-deps "
                        "--no-binary :all: uncensorbench==0.3.7)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pyrit = pyrit_rows(args.pyrit or fetch_wheel())
    write(args.out / "harm-pyrit.jsonl", pyrit)
    if args.uncensorbench:
        write(args.out / "harm-uncensorbench.jsonl", uncensorbench_rows(args.uncensorbench))
    folder = args.shared / "harmful-completions"
    if not folder.is_dir():
        print(f"{folder} not found: harm-mixed.jsonl not written")
        return
    lat = compliant(folder / "lat_harmful.jsonl")
    random.Random(args.seed).shuffle(lat)
    write(args.out / "harm-mixed.jsonl",
          compliant(folder / "xstest_harmful.jsonl") + lat[:args.lat] + [r for r in pyrit if not r["harmful"]])


if __name__ == "__main__":
    main()
