"""A background thread with its own connection to the store: it writes generations within `every` seconds of
their arrival and keeps the run's lease alive, whatever the main thread is busy with (a long batch)."""

import queue
import threading
from pathlib import Path

from emprobe.model import GenerationResult
from emprobe.store._sqlite import Store


class StoreWorker:
    """Stores queued generations every `every` seconds and renews the run's lease; `close` stores the rest."""

    def __init__(self, path: Path, run_id: str, lease_seconds: float, every: float = 2.0):
        self.path, self.run_id, self.lease_seconds = path, run_id, lease_seconds
        self.every = max(every, 0.05)
        self.queue: queue.SimpleQueue[tuple[str, GenerationResult]] = queue.SimpleQueue()
        self.stored = 0
        """Generations this worker has written."""
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._written = threading.Condition()
        self._queued = 0
        self.thread = threading.Thread(target=self._loop, name="emprobe-store", daemon=True)
        self.thread.start()

    def save_generation(self, model: str, result: GenerationResult) -> None:
        self._raise()
        with self._written:
            self._queued += 1
        self.queue.put((model, result))

    def flush(self) -> None:
        """Wait until everything queued so far is stored."""
        with self._written:
            self._written.wait_for(lambda: self.stored >= self._queued or self.error is not None)
        self._raise()

    def close(self) -> None:
        """Store what is queued, stop renewing the lease and end the thread."""
        self._stop.set()
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        try:
            with Store(self.path) as store:
                while True:
                    stopping = self._stop.wait(self.every)
                    self._write(store)
                    if stopping:
                        return
                    store.take_lease(self.run_id, self.lease_seconds)
        except BaseException as err:  # handed to the main thread at its next call
            self.error = err
            with self._written:
                self._written.notify_all()

    def _write(self, store: Store) -> None:
        batch: dict[str, list[GenerationResult]] = {}
        count = 0
        while True:
            try:
                model, result = self.queue.get_nowait()
            except queue.Empty:
                break
            batch.setdefault(model, []).append(result)
            count += 1
        for model, results in batch.items():
            store.save_generations(model, results)
        with self._written:
            self.stored += count
            self._written.notify_all()
