"""A models folder (operators, renderers, assets) as equations, `pops apply`, `pops eval` and `pops serve` read it,
and the paper's released operators imported into one."""
