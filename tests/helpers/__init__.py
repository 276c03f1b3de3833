"""What the specifications share: builders of tiny models, pairs, worlds and files, and the ways to run pops.

Test files import from here (`from tests.helpers.pairs import make_pairs`), never from one another; a builder two
files need lives here once. The repository root is on sys.path under pytest (`pythonpath = ["."]` in
pyproject.toml) and for `python -m tests.helpers.bad_input`, so `tests.helpers` imports the same way everywhere.

    cli          run_cli: `pops ARGS` in this process
    priors       tiny_prior, tiny_operator, picture_operator
    pairs        make_pairs, slot_inputs, raw writers (files the readers must refuse)
    training     tiny training runs: settings, config, weights and their differences
    models       models folders: operator + test pairs + gallery, union test data
    images       random_images, pixels, solid, bomb_png
    tokenizers   CLIP tokenizers written in the real file layout
    real_stack   tiny random components of the real classes (CLIP, Kandinsky, SDXL, IP-Adapter, DPT), the hub layouts
    demo_world   a tiny world, a colour "encoder", word rows
    processes    the repository root, a subprocess environment, free ports
    browser      `pops serve` in a subprocess, headless chromium through Playwright
    bad_input    the bad-input suite: its world, its harness, its ONE table of cases, the table report
"""
