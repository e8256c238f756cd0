"""What every executor shares: shards keep a prompt's samples together and prompts of similar length side by side;
the local path never imports Ray; executor options are checked, one line each, before any work."""

import subprocess
import sys

import pytest

from emprobe.condition import Decoding, Message
from emprobe.errors import EmprobeError
from emprobe.executor import ExecutorSettings, generation_shards
from emprobe.model import GenerationRequest


def requests(prompt: str, n: int, first: int = 0) -> list[GenerationRequest]:
    messages = (Message(role="user", content=prompt),)
    return [GenerationRequest(key=f"{prompt}-{i}", messages=messages, decoding=Decoding(seed=i))
            for i in range(first, first + n)]


def test_shards_keep_prompts_whole_and_sort_them_by_length():
    pages = [requests("a" * 50, 3) + requests("b", 2), requests("b", 1, first=2) + requests("c" * 10, 4),
             requests("d" * 30, 9)]
    shards = list(generation_shards(pages, size=6, window=6))
    keys = [[r.key.split("-")[0][0] for r in shard] for shard in shards]
    assert sum(len(s) for s in shards) == 19 and len({r.key for s in shards for r in s}) == 19
    assert all(len(s) <= 6 for s in shards)
    # the first window (a, b) waits for b's last sample in the next page; short prompts first within a window
    assert keys[0] == ["b", "b", "b", "a", "a", "a"]
    assert keys[1] == ["c"] * 4
    assert keys[2:] == [["d"] * 6, ["d"] * 3]  # a prompt larger than a shard is the only one split


def test_local_runs_never_import_ray(tmp_path):
    code = ("import sys, emprobe.cli, emprobe.runner, emprobe.executor; from emprobe.executor import make_executor, "
            "ExecutorSettings; make_executor(ExecutorSettings()).close(); print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


@pytest.mark.parametrize(("given", "words"), [
    ({"kind": "spark"}, "Input should be 'local' or 'ray'"),
    ({"address": "auto"}, "--address needs --executor ray"),
    ({"workers": 4}, "--workers needs --executor ray"),
    ({"kind": "ray", "workers": 0}, "greater than or equal to 1"),
])
def test_executor_options_are_checked_before_any_work(given, words, tmp_path):
    from emprobe.cli.run import _executor_settings

    with pytest.raises(EmprobeError, match=words):
        _executor_settings(**{**ExecutorSettings().model_dump(), **given})
