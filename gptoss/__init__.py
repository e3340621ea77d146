"""Model definitions: nano GPT-OSS and the GPT-2 baseline, their presets, checkpoints and HF export."""
