"""Embeddings on disk: the content-keyed cache every image is encoded into once (`cache`), the training pairs every
trainer reads (`pairs`), and the embedding files that chain operators through `pops apply` (`io`)."""
