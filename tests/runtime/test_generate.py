"""The runtime's generate(): greedy equals PyTorch, sampling is seeded, streaming, stops, limits, errors."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.runtime import InputError, ToolchainError, load
from toolchain.runtime.generate import Sampling, pick


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def llama(tiny_decoder, request):
    """Both graph layouts: llama through ONNX Runtime GenAI's builder (right-padded prompts, one shared KV
    buffer updated in place) and gpt2 through optimum (left-padded, past and present in two buffers)."""
    src, art = tiny_decoder(request.param)
    model = load(art, provider="cpu")
    assert model.generator.shared_kv == (request.param == "llama")
    return src, model


def torch_greedy(src, prompt, n):
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(src))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(src)).eval()
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=0)
    new = out[0, ids.shape[1]:].tolist()
    new = new[: new.index(0)] if 0 in new else new
    return tok.decode(new, skip_special_tokens=True)


def test_greedy_matches_transformers(llama):
    src, m = llama
    for prompt in ("the film", "a dull and lifeless story with no", "x"):
        assert m.generate(prompt, max_new_tokens=30) == torch_greedy(src, prompt, 30)


def test_batch_of_uneven_prompts_equals_one_by_one(llama):
    _, m = llama
    prompts = ["a", "the film was a delight from start to", "it rained"]
    assert m.generate(prompts, max_new_tokens=16) == [m.generate(p, max_new_tokens=16) for p in prompts]


def test_stream_concatenates_to_the_text(llama):
    _, m = llama
    for kwargs in ({}, {"temperature": 0.9, "top_p": 0.9, "seed": 3}, {"stop": ["e"]}):
        pieces = list(m.generate("the film", max_new_tokens=20, stream=True, **kwargs))
        assert "".join(pieces) == m.generate("the film", max_new_tokens=20, **kwargs)
        assert all(isinstance(p, str) and p for p in pieces)


def test_usage_counts_tokens_and_says_why_generation_ended(llama, monkeypatch):
    """generate(usage={}) reports, per prompt, the prompt's tokens, the tokens generated and why it ended, as an
    OpenAI-style server needs them; a stream fills it when it ends, with the same figures."""
    _, m = llama
    prompts = ["a", "the film was a delight from start to"]
    usage: dict = {}
    texts = m.generate(prompts, max_new_tokens=12, usage=usage)
    assert usage["prompt_tokens"] == m.encode(prompts)[1].sum(axis=1).tolist()
    for n, why in zip(usage["completion_tokens"], usage["finish_reasons"]):
        assert (why, n) == ("length", 12) or (why == "stop" and n < 12)
    short: dict = {}
    m.generate(prompts, max_new_tokens=1, usage=short)
    assert set(short["finish_reasons"]) <= {"length", "stop"} and "length" in short["finish_reasons"]
    assert short["completion_tokens"] == [1 if w == "length" else 0 for w in short["finish_reasons"]]
    stop = next(c for c in texts[1] if c.strip())
    cut: dict = {}
    assert m.generate(prompts[1], max_new_tokens=12, stop=[stop], usage=cut) == texts[1][: texts[1].index(stop)]
    assert cut["finish_reasons"] == ["stop"] and cut["completion_tokens"][0] <= usage["completion_tokens"][1]
    streamed: dict = {}
    assert "".join(m.generate(prompts[1], max_new_tokens=12, stream=True, usage=streamed)) == texts[1]
    assert streamed == {key: [usage[key][1]] for key in usage}
    with pytest.raises(ToolchainError, match="usage must be a dict"):
        m.generate("a", usage=[])
    monkeypatch.setattr(m.generator, "eos", set(range(m.generator.vocab)))  # every token ends the text: EOS first
    ended: dict = {}
    assert m.generate(prompts, max_new_tokens=12, usage=ended) == ["", ""]
    assert ended["finish_reasons"] == ["stop", "stop"] and ended["completion_tokens"] == [0, 0]


def test_sampling_is_seeded_and_varies(llama):
    _, m = llama
    kw = {"max_new_tokens": 20, "temperature": 1.5, "top_k": 50}
    assert m.generate("the", seed=1, **kw) == m.generate("the", seed=1, **kw)
    assert len({m.generate("the", seed=s, **kw) for s in range(6)}) > 1


def test_stop_strings_end_the_text_before_them(llama):
    _, m = llama
    full = m.generate("the film", max_new_tokens=30)
    for stop in {c for c in full if c.strip()}:
        out = m.generate("the film", max_new_tokens=30, stop=[stop])
        assert out == full[: full.index(stop)]


def test_context_limit(llama):
    _, m = llama
    ctx = m.manifest.max_length
    with pytest.warns(UserWarning, match="its beginning was cut"):
        out = m.generate("word " * (ctx * 2), max_new_tokens=8)
    assert isinstance(out, str)
    with pytest.raises(InputError, match="leaves no room for the prompt"):
        m.generate("hi", max_new_tokens=ctx)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be an int >= 1"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": 0}, "top_p must be in"),
        ({"top_k": -2}, "top_k must be an int >= 0"),
        ({"repetition_penalty": 0}, "repetition_penalty must be > 0"),
        ({"stop": [""]}, "stop must be a list of non-empty strings"),
    ],
)
def test_bad_settings(llama, kwargs, message):
    _, m = llama
    with pytest.raises(InputError, match=message):
        m.generate("hi", **kwargs)


def test_bad_prompts(llama):
    _, m = llama
    with pytest.raises(InputError, match="texts must be a str or a list of str"):
        m.generate(None)
    with pytest.raises(InputError, match="item 1 is NoneType"):
        m.generate(["a", None])
    with pytest.raises(InputError, match="stream=True takes one prompt"):
        m.generate(["a", "b"], stream=True)
    with pytest.raises(InputError, match="encodes to no tokens"):
        m.generate("")
    assert m.generate([]) == []
    with pytest.raises(ToolchainError, match=r"embed\(\) is not available for a text-generation artifact"):
        m.embed(["x"])


def test_pick_filters():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert pick(logits, [np.array([], dtype=int)], Sampling(temperature=0), rng)[0] == 0
    top1 = {int(pick(logits, [np.array([], dtype=int)], Sampling(temperature=1, top_k=1), rng)[0]) for _ in range(20)}
    assert top1 == {0}
    nucleus = {int(pick(logits, [np.array([], dtype=int)], Sampling(temperature=1, top_p=0.7), rng)[0]) for _ in range(200)}
    assert nucleus == {0, 1}
    penalised = pick(np.log(np.array([[0.6, 0.4]])), [np.array([0])], Sampling(repetition_penalty=10.0), rng)
    assert penalised[0] == 1


def test_generate_is_thread_safe(llama):
    from concurrent.futures import ThreadPoolExecutor

    _, m = llama
    prompts = ["the film", "a dull", "it rained", "actors"] * 4
    expected = [m.generate(p, max_new_tokens=10) for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda p: m.generate(p, max_new_tokens=10), prompts)) == expected


def test_cli_run_generates(tiny_decoder, capsys):
    from toolchain.cli.commands import main

    _, art = tiny_decoder("llama")
    assert main(["run", str(art), "the film", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the film") and load(art).generate("the film", max_new_tokens=6) in out
