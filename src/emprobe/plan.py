"""Expand suites x conditions x samples into sample specs with stable ids, lazily."""

from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict

from emprobe.condition import Condition, Decoding, Message
from emprobe.hashing import stable_hash
from emprobe.suite import Suite


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


def condition_key(condition: Condition) -> str:
    """A hash of everything a condition does, so a changed condition never reuses old sample ids."""
    return stable_hash(condition)


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
                            prompt_key=prompt_key, gen_key=stable_hash(model_identity, prompt_key, decoding),
                        )
