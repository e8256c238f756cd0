#!/usr/bin/env bash
# The checks that need a GPU, in one go, each step under its own time limit: the local backend's tests on CUDA,
# held-out splits of the built-in judge (when .gpu/ holds its prepared data), and generation throughput of random
# models of the default model's shape and of a 1.7B shape, against the roofline measured there.
#   bash scripts/gpu_checks.sh OUT [SOURCE]
# OUT receives a log per step and summary.txt. SOURCE: the default model, or a folder with its config.json and
# tokenizer when its weights cannot travel. emprobe must be importable (installed, or src/ and its dependencies on
# PYTHONPATH). JUDGE_TASKS picks the judge's tasks (train_judge.py fit --tasks; empty: none).
set -u
out=${1:?usage: gpu_checks.sh OUT [SOURCE]}
source=${2:-smollm2-135m}
python=${PYTHON:-python3}
tasks=${JUDGE_TASKS-7 9 10 11 12 13 14}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run it, keep its log, record its exit status and time
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - start)) s" | tee -a "$out/summary.txt"
    tail -n 4 "$out/$name.log"
    return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$out/summary.txt" 2>&1
"$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
'cuda', torch.cuda.is_available())" >>"$out/summary.txt" 2>&1
step tests 240 "$python" -m pytest -q -x -p no:cacheprovider tests/test_hf_backend.py tests/test_attention.py \
    tests/test_steering.py tests/test_diagnose_capture.py tests/test_train_run.py
if [ -n "$tasks" ] && [ -f .gpu/data.npz ]; then
    # shellcheck disable=SC2086  # the task numbers are words
    step judge 420 "$python" scripts/train_judge.py fit --tasks $tasks --workers 8 --budget 240 \
        && tar czf "$out/judge-fit.tgz" -C .gpu fit
fi
workload=(--dtypes bfloat16 --rounds 2 --naive-prompts 0 --skip-plain --skip-unblocked)
step model-135m 120 "$python" benchmarks/random_model.py "$source" /tmp/gpu-checks/135m --device cuda \
    && step generate-135m 240 "$python" benchmarks/bench_generate.py --model /tmp/gpu-checks/135m "${workload[@]}" \
        --samples 32 --limit 256 --max-tokens 200 --batch-size 256
step model-1.7b 180 "$python" benchmarks/random_model.py "$source" /tmp/gpu-checks/1.7b --device cuda --set \
    hidden_size=2048 intermediate_size=8192 num_hidden_layers=24 num_attention_heads=32 num_key_value_heads=32 \
    && step generate-1.7b 300 "$python" benchmarks/bench_generate.py --model /tmp/gpu-checks/1.7b "${workload[@]}" \
        --samples 32 --limit 256 --max-tokens 200 --batch-size 256
cat "$out/summary.txt"
