"""Expand suites x conditions x samples into sample specs with stable ids, lazily."""

from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict

from emprobe.condition import Condition, Decoding, Message
from emprobe.hashing import stable_hash
from emprobe.suite import TURN_MARK, Question, Suite


class SampleKey(BaseModel):
    """Where a sample sits in its run: its id, question, paraphrase, condition, index and seed."""

    sample_id: str
    suite: str
    question_id: str
    paraphrase_index: int
    condition: str
    sample_index: int
    seed: int


class SampleSpec(SampleKey):
    """One planned sample. Its id depends only on what it asks, never on how many samples were asked."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    question: str
    """What judges see as the question: the paraphrase as written, without the condition's trigger or format
    instructions (those are part of `messages`)."""
    decoding: Decoding
    """The condition's decoding with this sample's seed."""
    prompt_key: str
    gen_key: str


class TurnState(SampleKey):
    """A generated sample of a scripted question: the conversation so far and the model's answer (None when its
    generation failed)."""

    messages: tuple[Message, ...]
    answer: str | None


def turn_of(question_id: str) -> tuple[str, int]:
    """(the script's question id, turn number) of a stored question id: `q` is turn 1, `q#3` turn 3."""
    base, mark, turn = question_id.partition(TURN_MARK)
    return (base, int(turn)) if mark else (question_id, 1)


def turn_question_ids(question: Question) -> list[str]:
    """The stored question ids of every turn of a question (just its id without a script)."""
    return [question.id] + [f"{question.id}{TURN_MARK}{k}" for k in range(2, len(question.turns) + 2)]


def next_turn(state: TurnState, question: Question, condition: Condition, model_identity: str) -> SampleSpec | None:
    """The sample of the next turn of a scripted conversation, or None when it ends there (the script is over,
    its rule ends it, or the answer failed). Its id follows from its parent's id and what the user says."""
    _, turn = turn_of(state.question_id)
    if state.answer is None or turn > len(question.turns):
        return None
    said = question.turns[turn - 1].next_message(state.answer)
    if said is None:
        return None
    messages = (*state.messages, Message(role="assistant", content=state.answer), Message(role="user", content=said))
    prompt_key = stable_hash([m.model_dump() for m in messages])
    sample_id = stable_hash(state.sample_id, "turn", turn + 1, said)
    seed = int(stable_hash(condition.decoding.seed, sample_id), 16) % (2**63)
    decoding = condition.decoding.model_copy(update={"seed": seed})
    return SampleSpec(sample_id=sample_id, suite=state.suite, question_id=f"{question.id}{TURN_MARK}{turn + 1}",
                      paraphrase_index=state.paraphrase_index, condition=state.condition,
                      sample_index=state.sample_index, seed=seed, messages=messages, question=said,
                      decoding=decoding, prompt_key=prompt_key,
                      gen_key=generation_key(model_identity, prompt_key, decoding, condition))


def condition_key(condition: Condition) -> str:
    """A hash of everything a condition does, so a changed condition never reuses old sample ids (where its
    direction file lies is left out: its content is pinned by its digest)."""
    return stable_hash(condition.model_dump(mode="json", exclude={"intervention": {"direction", "of"}}))


def generation_key(model_identity: str, prompt_key: str, decoding: Decoding, condition: Condition) -> str:
    """What an answer depends on: the model, the prompt, the decoding, and the condition's thinking switch and
    intervention while generating (when it sets them)."""
    extra: dict = {}
    if condition.thinking is not None:
        extra["thinking"] = condition.thinking
    if condition.intervention is not None:
        extra["intervention"] = condition.intervention.key()
    return stable_hash(model_identity, prompt_key, decoding, extra) if extra else \
        stable_hash(model_identity, prompt_key, decoding)


def plan_samples(
    suites: list[Suite], conditions: list[Condition], model_identity: str, samples: int | None = None
) -> Iterator[SampleSpec]:
    """Yield every sample of the grid; `samples` overrides each question's samples_per_paraphrase."""
    for condition in conditions:
        ckey = condition_key(condition)
        for suite in suites:
            for question in suite.questions:
                count = samples if samples is not None else question.samples_per_paraphrase
                for p_index, paraphrase in enumerate(question.paraphrases):
                    messages = condition.messages(question, paraphrase)
                    prompt_key = stable_hash([m.model_dump() for m in messages])
                    for s_index in range(count):
                        sample_id = stable_hash(suite.name, question.id, p_index, paraphrase, ckey, s_index)
                        seed = int(stable_hash(condition.decoding.seed, sample_id), 16) % (2**63)
                        decoding = condition.decoding.model_copy(update={"seed": seed})
                        yield SampleSpec(
                            sample_id=sample_id, suite=suite.name, question_id=question.id,
                            paraphrase_index=p_index, condition=condition.name, sample_index=s_index,
                            seed=seed, messages=messages, question=paraphrase, decoding=decoding,
                            prompt_key=prompt_key, gen_key=generation_key(model_identity, prompt_key, decoding,
                                                                          condition),
                        )
