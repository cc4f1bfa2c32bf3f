"""Text: Chinese and English word handling, the lexicons, the bot's phrases in both languages."""
