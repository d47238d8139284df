"""Model backends behind two small interfaces: a VLM that answers in text, a segmenter
that turns box/point prompts into masks. Heavy imports happen inside the backends."""
