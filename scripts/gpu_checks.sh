#!/usr/bin/env bash
# The checks that need a GPU, each step under its own time limit (a lent GPU's minutes are few):
#   tests     the local backend's tests, which run on CUDA where it is present
#   generate  generation throughput of a random-weight model of a 1.7B shape against the roofline measured there
#             (bench_generate.py): 256 rows (attention kernels as emprobe limits them and as torch chooses them,
#             then a profile of one run) and 512 rows
#   small     the same for the default model's shape, 256 rows
#   judge     the built-in judge's fits (train_judge.py fit --tasks $JUDGE_TASKS, 8 at once; seven took 131-137 s
#             each on an H200), when .gpu/ holds its prepared data
#   bash scripts/gpu_checks.sh OUT [PART ...]        # default: tests generate; their limits add up to 360 s
# scripts/gpu_prepare.sh makes, here, the wheels and model files these need there, and prints the device calls.
# OUT receives a log per step, summary.txt, and judge-fit.tgz (the fit/ folder, whatever tasks finished).
# MODEL_SOURCE: the default model, or a folder with its config.json and tokenizer when its weights cannot travel.
# JUDGE_TASKS: train_judge.py fit --tasks (0 the shipped fit, 1-15 the held-out splits). emprobe must be
# importable (installed, or its dependencies on PYTHONPATH: src/ is added).
set -u
out=${1:?usage: gpu_checks.sh OUT [tests] [generate] [judge]}
shift
parts=${*:-tests generate}
source=${MODEL_SOURCE:-smollm2-135m}
tasks=${JUDGE_TASKS:-}
python=${PYTHON:-python3}
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

model() {  # model NAME [--set KEY=VALUE ...]: a random-weight model of the default model's shape, changed so
    local name=$1
    shift
    step "model-$name" 50 "$python" benchmarks/random_model.py "$source" "/tmp/gpu-checks/$name" --device cuda "$@"
}

generate() {  # generate NAME ROWS SECONDS [OPTION ...]: throughput at ROWS rows, ROWS samples (8 prompts) of 200 tokens
    local name=$1 rows=$2 limit=$3
    shift 3
    step "generate-$name-$rows" "$limit" "$python" benchmarks/bench_generate.py --model "/tmp/gpu-checks/$name" \
        --dtypes bfloat16 --naive-prompts 0 --skip-plain --samples $((rows / 8)) --limit "$rows" --max-tokens 200 \
        --batch-size "$rows" "$@"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} >"$out/summary.txt" 2>&1
for part in $parts; do
    case $part in
        tests)
            step tests 70 "$python" -m pytest -q -p no:cacheprovider tests/test_hf_backend.py \
                tests/test_attention.py tests/test_steering.py tests/test_diagnose_capture.py tests/test_train_run.py ;;
        generate)
            model 1.7b --set hidden_size=2048 intermediate_size=8192 num_hidden_layers=24 num_attention_heads=32 \
                num_key_value_heads=32 \
                && generate 1.7b 256 150 --rounds 2 --profile \
                && generate 1.7b 512 90 --rounds 1 ;;
        small)
            model 135m && generate 135m 256 150 --rounds 1 ;;
        judge)
            if [ -z "$tasks" ]; then
                echo "judge: JUDGE_TASKS unset (0 the shipped fit, 1-15 the splits)" | tee -a "$out/summary.txt"
                continue
            fi
            if [ ! -f .gpu/data.npz ]; then
                echo "judge: .gpu/data.npz missing (train_judge.py prepare)" | tee -a "$out/summary.txt"
                continue
            fi
            # shellcheck disable=SC2086  # the task numbers are words
            step judge 240 "$python" scripts/train_judge.py fit --tasks $tasks --workers 8 --budget 120
            [ -d .gpu/fit ] && tar czf "$out/judge-fit.tgz" -C .gpu fit ;;
        *)
            echo "unknown part $part: tests, generate, small or judge" | tee -a "$out/summary.txt" ;;
    esac
done
cat "$out/summary.txt"
