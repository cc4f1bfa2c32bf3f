"""The core: intake, turns, commands and the gate; it knows no messenger."""
