"""The seed documents' classifiers as readable model files, one per architecture, each with
``build(config) -> (module, IOSpec)``: the entry points recipes name in ``[model] module = ...``.

gru.py          nn.Embedding -> nn.GRU -> nn.Linear
transformer.py  nn.Embedding (+ positions) -> nn.TransformerEncoder -> nn.Linear
"""
