"""The log: the SQLite store with its migrations, the write backlog, usage queries, the log page."""
