"""`--pair GLOB=REFERENCE`: pair questions of suites that cannot be edited (Betley et al.'s files) with a reference."""

from fnmatch import fnmatchcase

from emprobe.errors import EmprobeError
from emprobe.suite._model import Suite, check_pair


def pair_questions(suites: tuple[Suite, ...], specs: list[str]) -> tuple[Suite, ...]:
    """The suites with `pairs_with` set by each spec: every question whose id matches GLOB (but REFERENCE itself)
    pairs with REFERENCE, in each suite that has REFERENCE."""
    for spec in specs:
        pattern, eq, reference = (part.strip() for part in spec.partition("="))
        if not eq or not pattern or not reference:
            raise EmprobeError(f"--pair {spec!r}: give QUESTIONS=REFERENCE, e.g. 'lie_*=lie_no_sys_prompt'")
        holders = [s for s in suites if any(q.id == reference for q in s.questions)]
        if not holders:
            raise EmprobeError(f"--pair {spec!r}: no question {reference!r} in the run's suites")
        paired = 0
        out = []
        for suite in suites:
            if suite not in holders:
                out.append(suite)
                continue
            ref = next(q for q in suite.questions if q.id == reference)
            questions = []
            for q in suite.questions:
                if q.id != reference and fnmatchcase(q.id, pattern):
                    if q.pairs_with not in (None, reference):
                        raise EmprobeError(f"--pair {spec!r}: question {q.id!r} already pairs with {q.pairs_with!r}")
                    q = q.model_copy(update={"pairs_with": reference})
                    try:
                        check_pair(q, ref)
                    except ValueError as err:
                        raise EmprobeError(f"--pair {spec!r}: {err}") from None
                    paired += 1
                questions.append(q)
            out.append(suite.model_copy(update={"questions": tuple(questions)}))
        if not paired:
            raise EmprobeError(f"--pair {spec!r}: no question but {reference!r} matches {pattern!r}")
        suites = tuple(out)
    return suites
