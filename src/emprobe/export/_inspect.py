"""An Inspect AI `.eval` log of a run, written with inspect_ai's own API so `inspect view` can browse it.

Each emprobe sample becomes one Inspect sample (id = sample id, epoch 1) with the prompt, the answer,
one score per judge metric plus `misaligned` (1/0), and the condition fields as metadata. Inspect's
writer takes the whole log at once, so this export holds every sample of the run in memory.
"""

from pathlib import Path
from typing import Any

from emprobe.errors import EmprobeError
from emprobe.export._rows import ExportSource
from emprobe.store import SampleRow, Store

INSTALL = "the Inspect AI export needs inspect_ai: pip install inspect_ai"
STOP_REASONS = {"stop": "stop", "length": "max_tokens"}


def _inspect() -> Any:
    try:
        import inspect_ai.log as log
        import inspect_ai.model as model
        import inspect_ai.scorer as scorer
    except ImportError:
        raise EmprobeError(INSTALL) from None
    return log, model, scorer


def write_eval_log(db: Store, source: ExportSource, path: Path) -> int:
    """Write the run as an Inspect `.eval` log at `path`; returns the number of samples."""
    log, model, scorer = _inspect()
    run = source.run
    model_name = f"emprobe/{run.model}"
    samples, sums = [], {m: [0.0, 0] for m in (*source.metrics, "misaligned")}
    for row in db.samples(run.run_id, source.judge):
        sample = _sample(row, source, model_name, log, model, scorer)
        for name, score in (sample.scores or {}).items():
            if isinstance(score.value, int | float):
                sums[name][0] += float(score.value)
                sums[name][1] += 1
        samples.append(sample)
    suites = ", ".join(s.get("name", "?") for s in run.config.get("suites", [])) or "emprobe"
    results = log.EvalResults(
        total_samples=len(samples), completed_samples=sum(1 for s in samples if s.error is None),
        scores=[log.EvalScore(name=name, scorer="emprobe" if name == "misaligned" else source.judge or "judge",
                              scored_samples=count, unscored_samples=len(samples) - count,
                              metrics={"mean": log.EvalMetric(name="mean", value=total / count if count else 0.0)})
                for name, (total, count) in sums.items()],
    )
    spec = log.EvalSpec(
        eval_id=run.run_id, run_id=run.run_id, created=run.created, task=f"emprobe/{suites}", task_id=run.run_id,
        task_display_name=run.name or run.run_id, dataset=log.EvalDataset(name=suites, samples=len(samples)),
        model=model_name, config=log.EvalConfig(), packages={k: str(v) for k, v in run.versions.items()},
        metadata={"emprobe_config": run.config, "judge": source.judge, "backend": run.info,
                  "thresholds": source.thresholds.model_dump()},
    )
    eval_log = log.EvalLog(eval=spec, status="success", samples=samples, results=results,
                           stats=log.EvalStats(started_at=run.created, completed_at=run.updated))
    log.write_eval_log(eval_log, str(path), format="eval")
    return len(samples)


def _sample(row: SampleRow, source: ExportSource, model_name: str, log: Any, model: Any, scorer: Any) -> Any:
    messages: list[Any] = []
    if row.system:
        messages.append(model.ChatMessageSystem(content=row.system))
    messages.append(model.ChatMessageUser(content=row.prompt or ""))
    scores: dict[str, Any] = {}
    errors = {}
    for metric in source.metrics:
        score, label, error = row.scores.get(metric, (None, None, None))
        if score is not None:
            scores[metric] = scorer.Score(value=score, answer=label)
        elif label is not None:
            scores[metric] = scorer.Score(value=label, answer=label)
        elif error is not None:
            errors[metric] = error
    misaligned = row.misaligned(source.thresholds)
    if misaligned is not None:
        scores["misaligned"] = scorer.Score(value=int(misaligned))
    output = model.ModelOutput(model=model_name, error=row.generation_error)
    if row.answer is not None:
        output = model.ModelOutput.from_content(model_name, row.answer,
                                                stop_reason=STOP_REASONS.get(row.finish_reason or "", "unknown"))
    tokens = (row.prompt_tokens or 0, row.completion_tokens or 0)
    return log.EvalSample(
        id=row.sample_id, epoch=1, input=messages, target="",
        messages=[*messages, *([model.ChatMessageAssistant(content=row.answer)] if row.answer is not None else [])],
        output=output, scores=scores or None,
        metadata={"suite": row.suite, "question_id": row.question_id, "paraphrase_index": row.paraphrase_index,
                  "condition": row.condition, "sample_index": row.sample_index, "seed": str(row.seed),
                  "finish_reason": row.finish_reason, "judge": source.judge, "judge_errors": errors},
        model_usage={model_name: model.ModelUsage(input_tokens=tokens[0], output_tokens=tokens[1],
                                                  total_tokens=sum(tokens))},
        error=None if row.generation_error is None else log.EvalError(
            message=row.generation_error, traceback="", traceback_ansi=""),
    )
