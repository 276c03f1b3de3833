"""`python -m pops …` (and `accelerate launch -m pops train …`): the same as the `pops` command."""

from pops.cli import main

if __name__ == "__main__":
    main()
