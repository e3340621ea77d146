"""Data preparation: tokenizing TinyStories with tiktoken into Arrow shards, and reading them back for training."""
