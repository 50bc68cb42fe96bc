"""tickline: the command-line entry point that composes server, bots and replays."""
