"""CLI subcommands: each module here defines `register(app)` and is picked up by djepa_bench.cli."""
