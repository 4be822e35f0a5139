"""Pretraining objectives for models built from scratch ([pretrain] objective in a recipe).

Each objective says which model head it trains, how the config is made, how unlabelled texts become
training blocks and which collator makes the labels. masked-lm is BERT's (15% of tokens masked);
causal-lm is GPT-2's (next-token prediction). stages.pretrain() looks the recipe's objective up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from toolchain.train.recipe import Recipe, Training


@dataclass(frozen=True)
class Objective:
    name: str  # a key of recipe.PRETRAIN_OBJECTIVES
    what: str  # for the progress line
    auto_class: str  # the transformers Auto class of the pretrained head
    config: Callable[[Any, Training], dict[str, Any]]  # (tokenizer, settings) -> AutoConfig.for_model kwargs
    blocks: Callable[[Any, list[str], Training], list[dict[str, list[int]]]]  # (tokenizer, texts, settings)
    collator: Callable[[Any, Training], Any]  # (tokenizer, settings) -> a data collator


def _masked_config(tok, settings: Training) -> dict[str, Any]:
    return {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "max_position_embeddings": settings.max_length + 2}


def _masked_blocks(tok, texts: list[str], settings: Training) -> list[dict[str, list[int]]]:
    """Concatenate the token stream (texts separated by [SEP]) and cut it into max_length blocks: no padding."""
    ids = [i for row in tok(texts, add_special_tokens=False)["input_ids"] for i in row + [tok.sep_token_id]]
    size = settings.max_length - 2
    return [{"input_ids": tok.build_inputs_with_special_tokens(ids[i : i + size])}
            for i in range(0, max(1, len(ids) - size + 1), size)]


def _masked_collator(tok, settings: Training):
    import transformers

    return transformers.DataCollatorForLanguageModeling(tok, mlm_probability=settings.mlm_probability)


def _causal_config(tok, settings: Training) -> dict[str, Any]:
    """bos = eos = pad: the one end-of-text token; the finetuned classifier finds its last token by pad_token_id."""
    return {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id, "max_position_embeddings": settings.max_length}


def _causal_blocks(tok, texts: list[str], settings: Training) -> list[dict[str, list[int]]]:
    """The token stream (texts separated by end-of-text) cut into max_length blocks: no padding."""
    ids = [i for row in tok(texts, add_special_tokens=False)["input_ids"] for i in row + [tok.eos_token_id]]
    size = settings.max_length
    return [{"input_ids": ids[i : i + size]} for i in range(0, max(1, len(ids) - size + 1), size)]


def _causal_collator(tok, settings: Training):
    import transformers

    return transformers.DataCollatorForLanguageModeling(tok, mlm=False)


OBJECTIVES: dict[str, Objective] = {
    "masked-lm": Objective("masked-lm", "masked language modelling", "AutoModelForMaskedLM",
                           _masked_config, _masked_blocks, _masked_collator),
    "causal-lm": Objective("causal-lm", "causal language modelling", "AutoModelForCausalLM",
                           _causal_config, _causal_blocks, _causal_collator),
}


def objective_of(recipe: Recipe) -> Objective:
    return OBJECTIVES[recipe.pretrain.objective]


def pretrain_model(recipe: Recipe, tok, settings: Training):
    """A new model of the recipe's architecture with the objective's head, sized to TOK and SETTINGS."""
    import transformers

    objective = objective_of(recipe)
    kwargs = {**objective.config(tok, settings), **recipe.source.config}
    config = transformers.AutoConfig.for_model(recipe.source.architecture, **kwargs)
    return getattr(transformers, objective.auto_class).from_config(config)
