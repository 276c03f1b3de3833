"""Shared ground that every room may use, importing nothing of pops above it.

* `registry` — one `OperatorSpec` per operator: the paper's facts (slots, dropout, guidance, alignment, aliases,
  test splits); adding an operator is adding an entry.
* `reference` — constants of the reference recipe (hub ids, scheduler configs, layouts, default steps, file names).
* `errors` — `BadValue` and `reason`: how pops says in one line what went wrong.
* `checks` — the boundary checks, one per kind of value a user gives (guidance, steps, seeds, counts, memory).
* `readers` / `files` — every file read from a user, and every file written (atomically).
* `schema` — the one config mechanism (dataclasses checked by pydantic).
* `hub` / `devices` — hub ids or local folders; devices, precisions and generators.
* `images` — image operations on arrays that several rooms share (grey-level erosion and dilation).
"""
