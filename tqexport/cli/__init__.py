"""Command-line tools: one module per subcommand (`NAME`, `HELP`, `add_arguments`, `run`), registered in
main."""
