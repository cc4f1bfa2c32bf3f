"""Word lists the checks read (bot.words.lexicon)."""
