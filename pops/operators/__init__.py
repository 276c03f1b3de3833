"""`pops.Operator` and everything around one trained operator: its inputs, its folder format, its model card, the
joint model (one prior for several operators), the words a text slot was trained on, released checkpoints."""
