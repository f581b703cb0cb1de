"""`make bench`: figures measured on this machine, each with its ratio to an anchor."""
