"""`python -m djepa_bench` runs the same CLI as the `djepa-bench` command."""

from djepa_bench.cli import main

if __name__ == "__main__":
    main()
