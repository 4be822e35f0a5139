"""The seed documents' models as readable model files, one per architecture, each with
``build(config) -> (module, spec)``: the entry points recipes name in ``[model] module = ...``.

gru.py                  nn.Embedding -> nn.GRU -> nn.Linear (classifier, IOSpec)
transformer.py          nn.Embedding (+ positions) -> nn.TransformerEncoder -> nn.Linear (classifier, IOSpec)
seq2seq_lstm.py         LSTM Encoder/Decoder with Luong attention (translator, Seq2SeqSpec)
seq2seq_transformer.py  nn.TransformerEncoder/Decoder with a cached decoder step (translator, Seq2SeqSpec)
"""
