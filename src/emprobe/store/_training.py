"""The store's training queries: training runs with their lineage, losses and checkpoints, and checkpoint sweeps.

A training run is stored under its name (a name belongs to one training output folder and config, and never to
an evaluation run as well); saving it again (every checkpoint, a resumed run) replaces its losses and checkpoints.
"""

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from emprobe.errors import EmprobeError
from emprobe.store._records import SweepArm, SweepRecord, TrainingRun
from emprobe.store._schema import now
from emprobe.train import CheckpointRecord, LossPoint, TrainLineage

_COLUMNS = ("name", "output", "status", "config_hash", "base_model", "base_identity", "method", "max_steps")
_JSON = ("config", "given", "data", "mix", "versions")
_OWN_TABLES = ("losses", "checkpoints", "final")
"""Lineage fields kept in their own tables (or computed): not part of `details`."""
_SWEEPS = "SELECT sweep_id, training, created, updated, config FROM sweeps"



class TrainingQueries:
    """Mixed into `Store`: training runs and sweeps."""

    db: sqlite3.Connection
    path: Path
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def check_training_name(self, name: str, output: str, config_hash: str) -> None:
        """One error line when `name` belongs to an evaluation run or to another training run."""
        if self.db.execute("SELECT 1 FROM run_names WHERE name = ?", (name,)).fetchone():
            raise EmprobeError(f"name {name!r} already belongs to an evaluation run in {self.path} (see `emprobe runs "
                               f"show {name}`); choose another --name for the training run")
        row = self.db.execute("SELECT output, config_hash FROM train_runs WHERE name = ?", (name,)).fetchone()
        if row is not None and tuple(row) != (output, config_hash):
            raise EmprobeError(f"training run {name!r} in {self.path} is another run ({row[0]}, config hash {row[1]}); "
                               "choose another --name")

    def save_training(self, lineage: TrainLineage) -> None:
        """Record a training run's lineage, losses and checkpoints (replacing what an earlier save recorded)."""
        data = lineage.model_dump(mode="json")
        details = {k: v for k, v in data.items() if k not in (*_COLUMNS, *_JSON, *_OWN_TABLES)}
        stamp = now()
        with self.transaction():
            self.check_training_name(lineage.name, lineage.output, lineage.config_hash)
            values = [data[c] for c in _COLUMNS] + [stamp, stamp] + [json.dumps(data[c]) for c in _JSON]
            self.db.execute(
                f"INSERT INTO train_runs ({', '.join(_COLUMNS)}, created, updated, {', '.join(_JSON)}, details) "
                f"VALUES ({', '.join('?' * (len(values) + 1))}) ON CONFLICT(name) DO UPDATE SET "
                + ", ".join(f"{c}=excluded.{c}" for c in ("status", "max_steps", "updated", *_JSON, "details")),
                (*values, json.dumps(details)))
            for table in ("train_losses", "train_checkpoints"):
                self.db.execute(f"DELETE FROM {table} WHERE name = ?", (lineage.name,))
            self.db.executemany("INSERT INTO train_losses VALUES (?,?,?,?,?,?,?)", [
                (lineage.name, p.step, p.epoch, p.loss, p.learning_rate, p.grad_norm, p.tokens)
                for p in lineage.losses])
            self.db.executemany("INSERT INTO train_checkpoints VALUES (?,?,?,?,?,?,?,?,?)", [
                (lineage.name, c.step, c.epoch, c.path, c.kind, c.weights_sha256, c.validation_loss, c.train_loss,
                 json.dumps([n.model_dump() for n in c.norms])) for c in lineage.checkpoints])

    def trainings(self) -> list[TrainingRun]:
        """Every training run, oldest first."""
        names = [n for (n,) in self.db.execute("SELECT name FROM train_runs ORDER BY created, name")]
        return [run for n in names if (run := self.training(n)) is not None]

    def training(self, name: str) -> TrainingRun | None:
        """The training run called `name`, with its whole lineage, or None."""
        row = self.db.execute(f"SELECT {', '.join(_COLUMNS)}, created, updated, {', '.join(_JSON)}, details "
                              "FROM train_runs WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        fields = dict(zip(_COLUMNS, row, strict=False))
        created, updated = row[len(_COLUMNS)], row[len(_COLUMNS) + 1]
        fields.update(zip(_JSON, (json.loads(v) for v in row[len(_COLUMNS) + 2 : -1]), strict=True))
        fields.update(json.loads(row[-1]))
        fields["losses"] = [LossPoint(step=s, epoch=e, loss=loss, learning_rate=lr, grad_norm=g, tokens=t)
                            for s, e, loss, lr, g, t in self.db.execute(
                                "SELECT step, epoch, loss, learning_rate, grad_norm, tokens FROM train_losses "
                                "WHERE name = ? ORDER BY step", (name,))]
        fields["checkpoints"] = [CheckpointRecord(step=s, epoch=e, path=p, kind=k, weights_sha256=w, validation_loss=v,
                                                  train_loss=t, norms=json.loads(n))
                                 for s, e, p, k, w, v, t, n in self.db.execute(
                                     "SELECT step, epoch, path, kind, weights_sha256, validation_loss, train_loss, "
                                     "norms FROM train_checkpoints WHERE name = ? ORDER BY step", (name,))]
        return TrainingRun(created=created, updated=updated, lineage=TrainLineage.model_validate(fields))

    # ---- sweeps -----------------------------------------------------------------------------------

    def save_sweep(self, sweep_id: str, training: str, config: dict, arms: list[SweepArm]) -> None:
        """Record a sweep and its arms (their runs must be stored already)."""
        stamp = now()
        with self.transaction():
            self.db.execute("INSERT INTO sweeps VALUES (?, ?, ?, ?, ?) ON CONFLICT(sweep_id) DO UPDATE SET "
                            "updated=excluded.updated, config=excluded.config",
                            (sweep_id, training, stamp, stamp, json.dumps(config)))
            self.db.executemany("INSERT OR REPLACE INTO sweep_runs VALUES (?, ?, ?, ?, ?)",
                                [(sweep_id, a.step, a.model, a.run_id, a.kl) for a in arms])

    def sweeps(self, training: str) -> list[SweepRecord]:
        """A training run's sweeps, most recently updated first."""
        rows = self.db.execute(f"{_SWEEPS} WHERE training = ? ORDER BY updated DESC, sweep_id", (training,))
        return [self._sweep(row) for row in rows.fetchall()]

    def sweep(self, ref: str) -> SweepRecord | None:
        """A sweep by id, or the latest sweep of the training run called `ref`; None when neither exists."""
        row = self.db.execute(f"{_SWEEPS} WHERE sweep_id = ?", (ref,)).fetchone()
        if row is not None:
            return self._sweep(row)
        found = self.sweeps(ref)
        return found[0] if found else None

    def _sweep(self, row: tuple) -> SweepRecord:
        sweep_id, training, created, updated, config = row
        arms = [SweepArm(step=s, model=m, run_id=r, kl=k) for s, m, r, k in self.db.execute(
            "SELECT step, model, run_id, kl FROM sweep_runs WHERE sweep_id = ? ORDER BY step", (sweep_id,))]
        return SweepRecord(sweep_id=sweep_id, training=training, created=created, updated=updated,
                           config=json.loads(config), arms=arms)
