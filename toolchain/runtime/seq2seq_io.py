"""The graph contract of an encoder-decoder artifact (task ``text2text-generation``): two components.

A variant has the components ``encoder`` and ``decoder`` (runtime/variants.py). Every tensor has its batch
on axis 0; the dynamic axes are named ``batch``, ``source`` (source tokens) and ``past_sequence``.

**encoder** (run once per call)
  inputs   ``input_ids`` (batch, source) int64, ``attention_mask`` (batch, source) int64 (1 real, 0 pad;
           sources are right-padded with the tokenizer's pad id)
  outputs  named tensors. One named ``past.<x>`` is the decoder's *initial* state ``<x>`` (an LSTM's h and
           c). Every other output (``memory``, ``cross.k.0``, ...) is fed to the decoder under the same name
           on every step, unchanged: what the decoder computes from the source once (the cross-attention
           keys and values are computed here, once, not per step).

**decoder** (one step; run once per output token)
  inputs   ``input_ids`` (batch, 1) int64: the previous token (the BOS id at the first step);
           ``encoder_attention_mask`` (batch, source) int64: the encoder's attention_mask;
           every encoder output that is not a ``past.*`` state, by its name;
           ``past.<x>``: the state. First step: the encoder's ``past.<x>`` when it outputs one, else zeros
           whose ``past_sequence`` axis has length 0 (an empty self-attention cache).
  outputs  ``logits`` (batch, vocab) float32: the next token's scores;
           ``present.<x>`` for every ``past.<x>``: the state after this step, the same shape as the past or
           one longer on its ``past_sequence`` axis (a self-attention cache grows by one per step).

The decoder start token is the manifest's ``generation.bos_token_id``; decoding stops at any of
``generation.eos_token_ids``. Custom modules (toolchain/export/modules.py ``Seq2SeqSpec``) export to this
contract; the runtime's Translator (runtime/translate.py) runs any pair of graphs that keep it.
"""

ENCODER = "encoder"
DECODER = "decoder"
COMPONENTS = (ENCODER, DECODER)
SOURCE_IDS = "input_ids"
SOURCE_MASK = "attention_mask"
STEP_IDS = "input_ids"
MEMORY_MASK = "encoder_attention_mask"
LOGITS = "logits"
PAST = "past."
PRESENT = "present."
BATCH_AXIS = "batch"
SOURCE_AXIS = "source"
PAST_AXIS = "past_sequence"


def present_name(past: str) -> str:
    """``past.h`` -> ``present.h``."""
    return PRESENT + past[len(PAST):]
