"""Synthetic training data for the embedded model: offline text corpora, fonts, page renderer."""
