"""Tokenizer training, training and evaluation of the embedded model."""
