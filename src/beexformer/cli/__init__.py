"""The `beex` command line. Each subcommand lives in a module of its own with a `register(subparsers)`."""
