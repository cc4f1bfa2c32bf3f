"""Content: loading and splitting files, the sentence and passage indexes, the admin's library."""
