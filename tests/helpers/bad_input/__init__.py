"""The systematic bad-input suite: every entry point (the CLI commands, the Python API, equations, the UI backend)
against every kind of bad input must be a clean refusal — ONE line naming the problem, no traceback, no file new or
changed.

    world     the folder of good and bad files the cases run in
    harness   run one case (CLI, API, UI) and judge it
    cases     THE table: every case, one section per entry point
    __main__  `python -m tests.helpers.bad_input` prints the table of kinds x entry points and the totals

`tests/test_bad_input.py` runs every case of the table as one test."""
