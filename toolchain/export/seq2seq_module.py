"""PyTorch greedy decoding of an encoder-decoder module, uncached: the reference the exported graphs must match.

Each step re-runs the module's own ``forward(input_ids, attention_mask, decoder_input_ids)`` over the whole
prefix and takes the argmax of the last position. Nothing here uses the module's ``decoder_graph`` (the
cached step that is exported), so a caching bug in that graph shows up as a parity miss instead of being
copied into the reference. It is also the "PyTorch greedy decoding" that ``toolchain bench`` compares with.
"""

from __future__ import annotations

from typing import Any


def pad_sources(rows: list[list[int]], pad_id: int):
    """Right-pad token id lists: (input_ids (B, S), attention_mask (B, S)) int64 tensors."""
    import torch

    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[i, : len(row)] = 1
    return ids, mask


def greedy_uncached(module: Any, spec: Any, ids: Any, mask: Any, max_new_tokens: int) -> list[list[int]]:
    """Greedy output ids per row (no start token, cut before EOS) for right-padded sources IDS/MASK (B, S).

    SPEC is the module's Seq2SeqSpec (bos_id, eos_id, pad_id). Rows that ended are fed pad tokens after their
    EOS; the decoder is causal, so that never changes their earlier positions."""
    import torch

    batch = ids.shape[0]
    prefix = torch.full((batch, 1), spec.bos_id, dtype=torch.int64)
    done = torch.zeros(batch, dtype=torch.bool)
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            nxt = module(ids, mask, prefix)[:, -1].argmax(-1)                    # (B,)
            nxt = torch.where(done, torch.full_like(nxt, spec.pad_id), nxt)
            prefix = torch.cat([prefix, nxt[:, None]], dim=1)                    # (B, t + 1)
            done |= nxt == spec.eos_id
            if bool(done.all()):
                break
    out = []
    for row in prefix[:, 1:].tolist():
        out.append(row[: row.index(spec.eos_id)] if spec.eos_id in row else row)
    return out


def greedy_batched(module: Any, spec: Any, sources: list[list[int]], max_new_tokens: int,
                   batch_size: int = 64) -> list[list[int]]:
    """greedy_uncached over SOURCES (token id lists) in batches of similar length; the input order is kept."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_sources([sources[i] for i in idx], spec.pad_id)
        for i, row in zip(idx, greedy_uncached(module, spec, ids, mask, max_new_tokens)):
            out[i] = row
    return out
