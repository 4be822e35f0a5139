"""What the runtime needs to feed a text encoder's graph and pool its states, written into the manifest at export:
the ``feeds`` section (how each graph input is filled: toolchain/runtime/feeds.py applies it), the side the
tokenizer pads on, and for feature-extraction the pooling (a sentence-transformers config's, else the family's)."""

from __future__ import annotations

from typing import Any

from toolchain.export.families import default_pooling, pad_multiple, pads_batches
from toolchain.runtime.errors import ExportError
from toolchain.runtime.manifest import Pooling
from toolchain.runtime.tasks import task_spec

# How the runtime fills each graph input (rule names of toolchain/runtime/feeds.py), by input name; FAMILY_FEEDS
# overrides one input for one family (model_type, input name). Global attention on the first token: Longformer's
# classifier sets it so when given none, and its users set it so for embeddings.
FEEDS = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "type_ids", "position_ids": "positions",
         "global_attention_mask": "first_token"}
FAMILY_FEEDS: dict[tuple[str, str], str] = {}
ENCODER_METHODS = ("embed", "classify")  # the tasks whose runtime tokenizes into these feeds (runtime/base.py)


def feed_rules(input_names: list[str], config: Any) -> dict[str, str]:
    """The feeds section for a graph with INPUT_NAMES, or ExportError naming an input the runtime cannot fill."""
    model_type = getattr(config, "model_type", "") or ""
    rules = {n: FAMILY_FEEDS.get((model_type, n), FEEDS.get(n)) for n in input_names}
    unknown = [n for n, rule in rules.items() if rule is None]
    if unknown:
        raise ExportError(f"the {model_type or 'exported'} graph takes inputs {unknown} that the runtime cannot fill "
                          "from a tokenizer; export it for another task, or add a rule for them to "
                          "toolchain/export/feeds.py FEEDS.")
    return rules


def padding_side(reference: Any, feeds: dict[str, str]) -> str:
    """The source tokenizer's side where the graph numbers positions from the mask; right otherwise (a graph that
    numbers them 0, 1, ... itself would shift a left-padded text's positions by its padding)."""
    side = getattr(reference.tokenizer, "padding_side", "right")
    return "left" if side == "left" and feeds.get("position_ids") == "positions" else "right"


def encoder_sections(task: str, inputs: list[dict[str, Any]], reference: Any, source: Any,
                     tokenizer: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest sections a text encoder task adds (feeds, tokenizer with its padding side, pooling); none for
    other tasks."""
    if task_spec(task).method not in ENCODER_METHODS or tokenizer is None:
        return {}
    feeds = feed_rules([i["name"] for i in inputs], reference.config)
    out = {"feeds": feeds, "tokenizer": {**tokenizer, "padding_side": padding_side(reference, feeds),
                                         "pad_to_multiple_of": pad_multiple(reference.config),
                                         "pad_batches": pads_batches(reference.config)}}
    if task_spec(task).method == "embed":
        out["pooling"] = Pooling.from_dict(source.pooling or default_pooling(reference.config)).to_dict()
    return out
