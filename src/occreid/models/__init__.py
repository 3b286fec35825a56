"""Shared model parts: backbones, heads, pooling, gated convolution, and the single output type."""
