"""One module per ``multa`` subcommand (see multa_broker.cli.COMMANDS)."""
