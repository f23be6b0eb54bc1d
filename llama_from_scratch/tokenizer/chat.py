"""The LLaMA 2 chat format, exactly as Meta's reference `generation.py` (`chat_completion`) builds it.

A dialog is a list of {"role": ..., "content": ...} messages: an optional "system" message, then
"user" and "assistant" alternating, ending with "user". The system message is folded into the first
user message between <<SYS>> tags. Every completed (user, assistant) exchange becomes

    BOS + encode("[INST] {user} [/INST] {assistant} ") + EOS

and the final user message becomes BOS + encode("[INST] {user} [/INST]"). BOS and EOS are added as
ids, never as the text "<s>", which the tokenizer would split into ordinary pieces. Each segment is
encoded on its own, so each gets its own dummy-prefix space.

Like Meta's code, a message containing the tags themselves is refused (Meta answers "Error: special
tags are not allowed as part of the prompt."; we raise an error saying so).

Chapter: tokenizer.
"""

from __future__ import annotations

from llama_from_scratch.tokenizer.base import Tokenizer

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
SPECIAL_TAGS = [B_INST, E_INST, "<<SYS>>", "<</SYS>>"]


def dialog_segments(dialog: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The texts to encode, each with BOS in front, and whether an EOS follows it."""
    for msg in dialog:
        for tag in SPECIAL_TAGS:
            if tag in msg["content"]:
                raise ValueError(f"special tag {tag!r} is not allowed inside a {msg['role']} "
                                 "message (Meta's chat_completion refuses it too); "
                                 "remove it from the text")
    if dialog and dialog[0]["role"] == "system":
        if len(dialog) < 2:
            raise ValueError("a system message must be followed by a user message")
        system, asked = dialog[0]["content"], dialog[1]["content"]
        first = {"role": dialog[1]["role"], "content": B_SYS + system + E_SYS + asked}
        dialog = [first] + dialog[2:]
    users_ok = all(m["role"] == "user" for m in dialog[::2])
    if not users_ok or not all(m["role"] == "assistant" for m in dialog[1::2]):
        raise ValueError("roles must be 'system' (optional, first), then 'user' and "
                         "'assistant' alternating, starting with 'user'; "
                         f"got {[m['role'] for m in dialog]}")
    if not dialog or dialog[-1]["role"] != "user":
        last = dialog[-1]["role"] if dialog else "nothing"
        raise ValueError(f"the last message must be from the user, got {last}")
    segments = [(f"{B_INST} {user['content'].strip()} {E_INST} "
                 f"{answer['content'].strip()} ", True)
                for user, answer in zip(dialog[::2], dialog[1::2])]
    segments.append((f"{B_INST} {dialog[-1]['content'].strip()} {E_INST}", False))
    return segments


def encode_dialog(dialog: list[dict[str, str]], tokenizer: Tokenizer) -> list[int]:
    """Prompt ids for a dialog, as `Llama.chat_completion` feeds them to the model."""
    ids: list[int] = []
    for text, eos in dialog_segments(dialog):
        ids += tokenizer.encode(text, bos=True, eos=eos)
    return ids
