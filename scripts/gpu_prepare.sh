#!/usr/bin/env bash
# Prepare, here, what gpu_checks.sh needs on a GPU machine that cannot reach a package index or a model hub:
#   .whl/          wheels of the packages its image lacks or has too old (Python 3.12), for the tests and generate
#   .gpu/smollm2/  the default model's config and tokenizer (random_model.py draws the weights there)
# The judge's data (.gpu/data.npz, meta.json, minilm/) comes from `train_judge.py prepare`. Both folders are ignored
# by git; each device call names what it needs in `carry`. Usage: bash scripts/gpu_prepare.sh
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
# The image has torch, numpy, scipy, httpx, typer, rich, jinja2, pyyaml, pandas, pyarrow and huggingface_hub 1.x;
# transformers there was 5.17, older than the hf extra's floor.
wheels="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
typing-extensions==4.16.0 tenacity==9.2.1 transformers==5.24.0 peft==0.21.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1
multiprocess==0.70.19"
# shellcheck disable=SC2086  # one word per wheel
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $wheels
folder=$(.venv/bin/python -c "from emprobe.model._resolve import materialize, resolve_model
found = resolve_model('smollm2-135m'); print(materialize(found.path, found.identity))")
mkdir -p .gpu/smollm2
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
    cp "$folder/$f" .gpu/smollm2/
done
du -sh .whl .gpu/smollm2
cat <<'EOF'
Then, with the device tool (the two calls' limits fit a session's 15 minutes with one start):
  carry [.gpu/data.npz, .gpu/meta.json, .gpu/minilm], timeout 300:  JUDGE_TASKS='...' bash scripts/gpu_checks.sh $OUT judge
  (8 tasks at once take about 140 s; `train_judge.py domain` needs the readings of all 15 splits in one .gpu/fit,
  and readings do not outlive the machine they are copied back to)
  (the next judge to try, docs/judge-designs.md "The embedded model's own rambling": make the model-made answers
  with the commands there, then prepare it first with
  `.venv/bin/python scripts/train_judge.py prepare --model-made ramble.jsonl cool.jsonl`)
  carry [.whl, .gpu/smollm2], timeout 400:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl && export PYTHONPATH=/tmp/site && MODEL_SOURCE=.gpu/smollm2 bash scripts/gpu_checks.sh $OUT generate tests
EOF
