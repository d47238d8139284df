"""Training-side code (SFT, GRPO and its rewards), kept apart so that inference — the
plugin and the pipeline — never imports it."""
