"""Word lists the checks read (bot.text.words.lexicon)."""
