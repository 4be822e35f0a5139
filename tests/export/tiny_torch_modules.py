"""Tiny custom nn.Modules for the export tests (entry points "tiny_torch_modules:build_*"), and a helper that
writes a module dir the way `toolchain train` does: safetensors weights, a `tokenizers` tokenizer, MODULE_FILE.

Every good module ignores padding (right padding): the RNNs take the state at the last real position, the
transformer masks attention (src_key_padding_mask) and takes a masked mean. ``build_reads_padding`` does
not: it takes the RNN state at the last position, padding included.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from toolchain.export.modules import (MODULE_FILE, TOKENIZER_FILE, WEIGHTS_FILE, IOSpec, TensorIO, module_dir_record,
                                      text_classifier_io)

HERE = Path(__file__).resolve().parent
LABELS = ["negative", "positive"]
SENTENCES = [
    "the film was a delight from start to finish",
    "a dull and lifeless story with no surprises",
    "actors shine in a witty , moving script",
    "it rained all day and the plot dragged on .",
    "the quick brown fox jumps over the lazy dog",
]


class RNNClassifier(nn.Module):
    """ids (B, T) -> embed (B, T, H) -> GRU or LSTM (B, T, H) -> state at the last real token (B, H) -> logits."""

    def __init__(self, vocab_size: int, cell: str = "gru", hidden: int = 16, last_real: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, len(LABELS))
        self.last_real = last_real

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(self.embed(input_ids))  # (B, T, H)
        if self.last_real:
            last = (attention_mask.sum(dim=1) - 1).clamp(min=0)  # (B,) right padding: the last real position
            picked = states.gather(1, last.view(-1, 1, 1).expand(-1, 1, states.size(-1))).squeeze(1)  # (B, H)
        else:
            picked = states[:, -1]  # wrong on purpose: a padded row's last position is padding
        return self.head(picked)


class TransformerClassifier(nn.Module):
    """ids (B, T) -> embed + positions (B, T, H) -> encoder, pads masked -> masked mean (B, H) -> logits (B, 2)."""

    def __init__(self, vocab_size: int, max_length: int, hidden: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.positions = nn.Embedding(max_length, hidden)
        layer = nn.TransformerEncoderLayer(hidden, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(hidden, len(LABELS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(input_ids.size(1), device=input_ids.device)
        x = self.embed(input_ids) + self.positions(steps)  # (B, T, H)
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)  # (B, T, H)
        m = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return self.head((x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0))


def build_gru(config):
    return RNNClassifier(config["vocab_size"], "gru"), text_classifier_io(config["vocab_size"])


def build_lstm(config):
    return RNNClassifier(config["vocab_size"], "lstm"), text_classifier_io(config["vocab_size"])


def build_transformer(config):
    return TransformerClassifier(config["vocab_size"], config["max_length"]), text_classifier_io(config["vocab_size"])


def build_reads_padding(config):
    return RNNClassifier(config["vocab_size"], "gru", last_real=False), text_classifier_io(config["vocab_size"])


def build_not_module(config):
    return object(), text_classifier_io(config["vocab_size"])


def build_wrong_io(config):
    spec = text_classifier_io(config["vocab_size"])
    two = IOSpec(spec.inputs, (*spec.outputs, TensorIO("hidden", "float32", {0: "batch"})), spec.example)
    return RNNClassifier(config["vocab_size"], "gru"), two


def tokenizer():
    """A word-level tokenizer trained on SENTENCES: [PAD] is 0, [UNK] 1."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return tok


def write_module_dir(path: Path, builder: str, max_length: int = 32, weights_from: str | None = None) -> Path:
    """A module dir for "tiny_torch_modules:BUILDER" with seeded random weights (from WEIGHTS_FROM's module,
    so entry points that cannot build still get a complete dir)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    tok.save(str(path / TOKENIZER_FILE))
    config = {"vocab_size": tok.get_vocab_size(), "max_length": max_length}
    torch.manual_seed(0)
    module, _ = globals()[weights_from if weights_from else builder](config)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path / WEIGHTS_FILE))
    record = module_dir_record(f"tiny_torch_modules:{builder}", config, "text-classification", LABELS, max_length,
                               pad_id=0, search=HERE)
    (path / MODULE_FILE).write_text(json.dumps(record), encoding="utf-8")
    return path


def torch_scores(module_dir: Path, texts: list[str]) -> torch.Tensor:
    """PyTorch's class probabilities for each text alone (no padding at all), as a (n, classes) tensor."""
    from toolchain.export.modules import read_module_dir

    from tokenizers import Tokenizer

    found = read_module_dir(module_dir)
    module, _ = found.build()
    tok = Tokenizer.from_file(str(module_dir / TOKENIZER_FILE))
    tok.enable_truncation(max_length=found.max_length)
    rows = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tok.encode(text).ids])
            rows.append(torch.softmax(module(ids, torch.ones_like(ids)).double(), dim=-1)[0])
    return torch.stack(rows)
