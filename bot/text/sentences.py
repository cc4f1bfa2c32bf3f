"""Where text breaks into sentences and clauses: every splitter the bot uses, in one place, each variant
named for its job. They differ on purpose (a streamed draft may not end at an English full stop that
could be "3."; a passage keeps a ；-ended clause whole; a long message is split after closing quotes and
citation markers), so each keeps the exact rule its job was measured with."""

from __future__ import annotations

import re

# Splitting a long reply into messages: a run of stops with the closing quotes, brackets and citation
# markers after it ("。”[2]"); an ASCII full stop only before whitespace or the end ("3.14", "v2.0" stay).
CLOSERS = "”’」』）)\"'"
_TAIL = rf"[{CLOSERS}]*(?:\[\d+\])*"
MESSAGE_SPLIT = re.compile(rf"(?:[。！？；!?;]|\.(?={_TAIL}(?:\s|$)))+{_TAIL}")

# Content into passages: after 。！？!?；; or an English full stop before whitespace (zero-width, for split).
PASSAGE_BREAK = re.compile(r"(?<=[。！？!?；;])|(?<=[.](?=\s))")

# The extractive path's candidate sentences: ending at 。！？!? (with the closing quotes after it), a line
# break, or an English full stop before a space; a long one is cut at ；; and then at ，,.
CANDIDATE = re.compile(r"[^。！？!?\n]+?(?:[。！？!?]+[”’」』）)]*|\.(?=\s)|$)", re.MULTILINE)
CANDIDATE_CLAUSE = re.compile(r"[^；;]+(?:[；;]|$)")
CANDIDATE_COMMA = re.compile(r"[^，,]+(?:[，,]|$)")

# A streamed draft is shown a sentence at a time: a sentence ends at 。！？!? or a line break, with the
# citation markers that follow it; a line break ends one unless it follows a colon or comma ("原因有以下几点：\n"
# announces a list).
STREAM_END = re.compile(r"(?:[。！？!?]|(?<![：:，,、；;\s])\n)(?:\s*[\[【]\d{1,3}[\]】])*")
# Where a cut-off draft may end, in either language: also an English full stop before a space or the end
# ("opens at 9 [1]. It closes" ends after "[1].", "3.5" does not end after "3.").
WHOLE_END = re.compile(r"(?:[。！？!?]|\.(?=\s|$)|(?<![：:，,、；;\s])\n)(?:\s*[\[【]\d{1,3}[\]】])*")

# The support checks read a draft sentence by sentence, a sentence clause by clause, a long clause by commas.
CHECKED_SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?]?")
CHECKED_CLAUSE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]?")
CHECKED_COMMA = re.compile(r"[^，,]+[，,]?")

# A copied answer stays within one clause of its sentence.
COPY_CLAUSE_END = re.compile("[，,；;。！？!?]")
