"""CLI commands: plain functions taking parsed arguments and a Console, returning an exit code."""
