"""`emprobe pairs FILE --model M`: preference pairs under a model: ranking accuracy, and the pairs most likely to
displace the preferred answer's likelihood under DPO (by CHES)."""

from pathlib import Path

import typer
from rich.table import Table

from emprobe.cli._console import console, shown
from emprobe.cli._evaluate import BACKEND_OPTION, STORE
from emprobe.config import DEFAULT_MODEL
from emprobe.model import BackendPool, parse_options, resolve
from emprobe.store import Store


def pairs(
    file: Path = typer.Argument(..., help="JSONL (optionally .gz) of prompt, chosen, rejected (and system)."),
    model: str = typer.Option(DEFAULT_MODEL, help="The local model to score the answers with."),
    backend_option: list[str] = BACKEND_OPTION,
    top: int = typer.Option(10, min=0, help="How many pairs to show, highest CHES first."),
    store: Path = STORE,
) -> None:
    """Log-prob of each answer, ranking accuracy (summed and per token) and CHES per pair, kept in the store."""
    from emprobe.diagnose import local, ranking_accuracy, read_pairs, score_pairs  # torch only when the command runs

    found, sha256 = read_pairs(file)
    ref = resolve(model, options=parse_options(backend_option))
    with BackendPool() as pool:
        backend = local(pool.get(ref), ref.spec)
        scores = score_pairs(backend, found, max(1, backend.sequence_rows // 8))
    with Store(store) as db:
        db.save_pair_scores(sha256, ref.identity, scores)
    plain, normalised = ranking_accuracy(scores)
    console.print(f"{len(scores)} pairs under {ref.identity}: ranking accuracy {plain:.1%} (summed log-prob), "
                  f"{normalised:.1%} (log-prob per token)")
    table = Table(title=f"pairs most likely to displace the chosen answer under DPO (highest CHES of {len(scores)})")
    for column in ("#", "CHES", "LN-CHES", "logp chosen", "logp rejected", "prompt", "chosen", "rejected"):
        table.add_column(column, justify="right" if column not in ("prompt", "chosen", "rejected") else "left")
    for s in sorted(scores, key=lambda s: -s.ches)[:top]:
        pair = found[s.pair_index]
        table.add_row(str(s.pair_index + 1), f"{s.ches:.4g}", f"{s.ln_ches:.4g}", f"{s.chosen_logprob:.2f}",
                      f"{s.rejected_logprob:.2f}", shown(pair.prompt, 30), shown(pair.chosen, 30),
                      shown(pair.rejected, 30))
    console.print(table)
    console.print("CHES = <S+, S-> - |S+|^2 over summed final hidden states (Razin et al. 2024); LN-CHES divides "
                  "each sum by its token count. Ties count as ranked wrong.", style="dim")
