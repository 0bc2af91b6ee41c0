"""Attention Atlas: a static-site generator for the attention heads of BERT-family models."""

__version__ = "0.1.0"
