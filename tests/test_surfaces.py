"""A researcher's surfaces: the retrieval server chosen from a run's config, run keys that follow
the content of data files and models, the Python API's cache, and checkpoints that re-evaluate to
their stored numbers."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import pytest
from test_qa_data import scripted_episode
from tiny import tiny

from testbed import config as config_module
from testbed import warmstart
from testbed.config import ConfigError, config_hash
from testbed.envs.text.qa_data import load_corpus
from testbed.envs.text.retrieval_server import RetrievalClient, RetrievalServer
from testbed.policies.hf_run import hf_parts
from testbed.run import RunConfig, build_trainer, evaluate_policy, load_policy, run_folder, train

DATA = Path(__file__).parent / "data"
OWN_DATA = {
    "policy.kind": "hf",
    "policy.device": "cpu",
    "task.world.kind": "fixed",
    "task.qa_path": str(DATA / "qa_train.parquet"),
    "task.qa_test_path": str(DATA / "qa_test.jsonl"),
    "task.corpus_path": str(DATA / "corpus.jsonl"),
}


def test_a_runs_config_chooses_the_retrieval_server_and_the_run_searches_it() -> None:
    pytest.importorskip("transformers")
    with RetrievalServer(load_corpus(DATA / "corpus.jsonl")) as server:
        asked: list[int] = []
        answer = server.answer
        server.answer = lambda request: asked.append(request["topk"]) or answer(request)  # type: ignore[method-assign, func-returns-value]
        cfg = tiny(**OWN_DATA, **{"task.retriever.url": server.url, "task.retriever.top_k": "2"})
        core = hf_parts(cfg)[2](1)
        task = cast(Any, core.task)  # the text task's
        retriever = task.retriever
        assert isinstance(retriever, RetrievalClient)
        assert (retriever.url, retriever.top_k, retriever.timeout) == (server.url, 2, 10.0)
        info, reward = scripted_episode(core, task.tokenizer, 3, "capital of Ostrava Reach", "Sundhal")
        assert "desert republic whose capital is Sundhal" in info and reward == 1.0
        assert asked == [2]  # the episode's search went to the server, with the config's top-k
    in_process = cast(Any, hf_parts(tiny(**OWN_DATA))[2](1).task).retriever
    assert not isinstance(in_process, RetrievalClient)  # no url: BM25 in this process


def test_a_retrieval_server_for_the_simulated_task_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^task\.retriever\.url='http://127\.0\.0\.1:8000/retrieve': a "):
        build_trainer([tiny(**{"task.retriever.url": "http://127.0.0.1:8000/retrieve"})])
    with pytest.raises(ConfigError, match=r"^RetrieverConfig\.timeout=0\.0: must lie in \[0\.001, 3600\.0\]"):
        tiny(**{"task.retriever.timeout": "0"})


def test_a_runs_key_follows_the_content_of_its_data_and_model_not_their_paths(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("qa_train.parquet", "qa_test.jsonl", "corpus.jsonl"):
        shutil.copy(DATA / name, data / name)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 64}')
    (model / "model.safetensors").write_bytes(b"\0" * 64)

    def key(folder: Path, model_dir: Path | None = model) -> str:
        paths = {f: str(folder / Path(OWN_DATA[f]).name) for f in OWN_DATA if f.endswith("_path")}
        return config_hash(tiny(**{**OWN_DATA, **paths, "policy.model_path": str(model_dir)}))

    first = key(data)
    assert key(DATA) == first  # the same bytes elsewhere: the same run
    corpus = data / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("Pellmar", "Pellmor"))
    edited = key(data)
    assert edited != first  # the data changed: a new run, never "cached:"
    (model / "model.safetensors").write_bytes(b"\1" * 64)
    assert key(data) != edited  # a weight file of the model changed
    before = key(data)
    (model / ".cache").mkdir()
    (model / ".cache" / "download.lock").write_text("x")  # a download cache is not the model
    assert key(data) == before
    assert key(data, tmp_path / "nowhere") != key(data, tmp_path / "elsewhere")  # missing: by its path


def test_keys_of_runs_without_paths_are_computed_without_reading_any_file(monkeypatch) -> None:
    cfgs = [RunConfig(), tiny(), tiny(**{"policy.kind": "hf", "task.world.kind": "fixed"})]
    keys = [config_hash(c) for c in cfgs]

    def no_file(path: str) -> str:
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(config_module, "content_digest", no_file)
    assert [config_hash(c) for c in cfgs] == keys
    assert config_hash(RunConfig()) == "cb05629931dc"  # the default run keeps the key of its stored runs


def test_the_python_api_caches_the_base_policy_as_the_command_line_does(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SAPO_TESTBED_CACHE", str(tmp_path / "cache"))
    build_trainer([tiny()])  # trains the base and caches it where the command line would
    assert len(list((tmp_path / "cache").glob("base-*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the base policy was trained again")

    monkeypatch.setattr(warmstart, "imitate", no_training)
    build_trainer([tiny()])  # the cached base: nothing trained
    train(tiny())
    with pytest.raises(AssertionError, match="trained again"):
        build_trainer([tiny()], cache_dir=None)  # no cache, when asked for none


EVAL_COLUMNS = [f"eval_em_{mode}" for mode in ("greedy", "sampled", "closed_book")]


def test_a_saved_policy_re_evaluates_to_the_numbers_its_run_stored(tmp_path) -> None:
    cfg = tiny(**{"trainer.n_updates": "3", "trainer.eval_episodes": "64"})
    rows, _ = train(cfg, cache_dir=tmp_path / "cache", runs_dir=tmp_path, save=True)
    path = run_folder(tmp_path, cfg) / "policy.pt"
    for base, row in ((False, rows[-1]), (True, rows[0])):
        loaded_cfg, policy = load_policy(path, base=base)
        for _ in range(2):  # and again: an evaluation does not move the next one's streams
            again = evaluate_policy(loaded_cfg, policy, update=int(row["update"]))
            assert [again[c] for c in EVAL_COLUMNS] == [row[c] for c in EVAL_COLUMNS]
    assert 0 < rows[-1]["eval_em_sampled"] < 1  # a number sampling could have moved


def test_an_evaluation_does_not_depend_on_the_evaluations_before_it(tmp_path) -> None:
    more = {"policy.kind": "tabular", "trainer.n_updates": "3", "trainer.eval_episodes": "128"}
    every = [tiny(**more, **{"trainer.eval_every": e}) for e in ("1", "3")]
    often, rarely = (train(c, cache_dir=tmp_path)[0] for c in every)
    assert len([r for r in often if "eval_em_sampled" in r]) == 4
    assert len([r for r in rarely if "eval_em_sampled" in r]) == 2
    assert [often[-1][c] for c in EVAL_COLUMNS] == [rarely[-1][c] for c in EVAL_COLUMNS]
    assert 0 < often[-1]["eval_em_sampled"] < 1  # a number sampling could have moved
