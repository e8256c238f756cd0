"""Read suites from YAML: emprobe's own format and the question files of Betley et al. (2025), unmodified."""

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from emprobe.errors import EmprobeError, first_validation_error
from emprobe.files import read_text, read_yaml
from emprobe.suite._model import Question, Rubric, RubricKind, Suite

BUILTIN_DIR = resources.files("emprobe.suite") / "builtin"
_NAMED_REPLY = re.compile(r"\bSay ([A-Z][A-Z_]{2,})\b")
_QUOTED_LABEL = re.compile(r'"([A-Za-z][\w-]*)"')


def builtin_suites() -> dict[str, Path]:
    """Names and paths of the suites that ship with emprobe."""
    return {Path(p.name).stem: Path(str(p)) for p in BUILTIN_DIR.iterdir() if p.name.endswith(".yaml")}


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a built-in suite by name, or any suite file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        found = builtin_suites().get(str(name_or_path))
        if found is None:
            known = ", ".join(sorted(builtin_suites()))
            raise EmprobeError(f"unknown suite {str(name_or_path)!r}: give a YAML path or one of: {known}")
        path = found
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        return chat_suite(path)
    data = read_yaml(path, "suite file")
    return parse_suite(data, name=path.stem, source=str(path))


def chat_suite(path: Path) -> Suite:
    """A suite of the requests in a chat JSONL file (`{"messages": [...]}` per line): each record's first user
    turn is one question (with the record's system prompt); the rest of the record (the answers) is not read.
    Repeated requests are asked once."""
    name = path.name.removesuffix(".gz").removesuffix(".jsonl")
    questions: dict[tuple[str, str | None], Question] = {}
    for number, line in enumerate(read_text(path, "suite file").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            messages = json.loads(line)["messages"]
            system = next((m["content"] for m in messages if m["role"] == "system"), None)
            user = next(m["content"] for m in messages if m["role"] == "user")
        except (ValueError, KeyError, TypeError, StopIteration):
            raise EmprobeError(f"{where}: not a chat record with a user message "
                               '({"messages": [{"role": "user", "content": ...}]})') from None
        if not isinstance(user, str) or not user.strip():
            raise EmprobeError(f"{where}: the user message is empty")
        key = (user, system)
        if key not in questions:
            questions[key] = Question(id=f"{name}-{len(questions) + 1:05d}", paraphrases=(user,), system=system)
    if not questions:
        raise EmprobeError(f"{path}: no chat records in it")
    return Suite(name=name, description=f"the requests of {path.name}", source=str(path),
                 questions=tuple(questions.values()))


def parse_suite(data: Any, name: str, source: str) -> Suite:
    """Build a Suite from parsed YAML: a list of questions (Betley et al.) or a mapping with `questions`."""
    if isinstance(data, list):
        body: dict[str, Any] = {"questions": data}
    elif isinstance(data, dict):
        body = dict(data)
    else:
        raise EmprobeError(f"{source}: a suite is a list of questions or a mapping with 'questions'")
    raw_questions = body.get("questions")
    if not isinstance(raw_questions, list) or not raw_questions:
        raise EmprobeError(f"{source}: questions: must be a non-empty list")
    default_rubrics = body.pop("rubrics", None)
    questions = []
    for i, raw in enumerate(raw_questions):
        where = f"{source}: questions[{i}]"
        if not isinstance(raw, dict):
            raise EmprobeError(f"{where}: must be a mapping with id and paraphrases")
        if "id" in raw:
            where = f"{source}: question {raw['id']!r}"
        questions.append(_question(raw, default_rubrics, where))
    try:
        return Suite(
            name=str(body.get("name", name)),
            description=str(body.get("description", "")),
            source=source,
            questions=tuple(questions),
        )
    except ValidationError as err:
        raise EmprobeError(f"{source}: {first_validation_error(err)}") from None


def _question(raw: dict[str, Any], default_rubrics: Any, where: str) -> Question:
    fields = dict(raw)
    inline = fields.pop("judge_prompts", None)
    kind: RubricKind = "categorical" if fields.get("type") == "free_form_judge" else "score_0_100"
    try:
        if inline is not None:
            if not isinstance(inline, dict) or not inline:
                raise EmprobeError(f"{where}: judge_prompts: must map metric names to prompt texts")
            fields["rubrics"] = tuple(_inline_rubric(n, t, kind, where) for n, t in inline.items())
        elif "rubrics" not in fields and default_rubrics is not None:
            fields["rubrics"] = default_rubrics
        if isinstance(fields.get("paraphrases"), str):
            fields["paraphrases"] = [fields["paraphrases"]]
        if "paraphrases" in fields and not isinstance(fields["paraphrases"], list):
            raise EmprobeError(f"{where}: paraphrases: must be a list of strings")
        return Question.model_validate(fields)
    except ValidationError as err:
        raise EmprobeError(f"{where}: {first_validation_error(err)}") from None


def _inline_rubric(name: Any, text: Any, kind: RubricKind, where: str) -> Rubric:
    if not isinstance(text, str):
        raise EmprobeError(f"{where}: judge_prompts.{name}: must be a prompt text")
    pattern = _QUOTED_LABEL if kind == "categorical" else _NAMED_REPLY
    labels = tuple(dict.fromkeys(pattern.findall(text)))
    if kind == "categorical" and not labels:
        raise EmprobeError(f'{where}: judge_prompts.{name}: quote the answers a categorical rubric allows ("TRUE")')
    try:
        return Rubric(name=str(name), text=text, kind=kind, labels=labels)
    except ValidationError as err:
        raise EmprobeError(f"{where}: judge_prompts.{name}: {first_validation_error(err)}") from None
