"""Where a text may be cut with no change to its byte-level BPE tokens, and a stream of text
re-cut there into pieces (data/corpus.py trains and encodes a BPE piece by piece, so its tokens
must not depend on how the text was read).
"""

from __future__ import annotations

from collections.abc import Iterator

from dbparallel.data.tokenizer import Key


def bpe_cut(text: str) -> int:
    """The last position where ``text`` may be cut with no change to its BPE tokens: a space
    between two non-spaces. The byte-level pre-tokenizer's pattern (GPT-2's) never joins a
    non-space and a following space, and starts a new pre-token at such a space with or
    without what came before it; 0 when there is no such place."""
    k = len(text) - 1
    while True:
        k = text.rfind(" ", 1, k)
        if k <= 0:
            return 0
        if not text[k - 1].isspace() and not text[k + 1].isspace():
            return k


def bpe_pieces(chunks: Iterator[tuple[Key, str]], size: int,
               hold: int) -> Iterator[tuple[Key, str]]:
    """The texts of consecutive chunks with the same key re-cut into pieces of at most
    ``size`` characters where BPE tokens cannot cross (``bpe_cut``), so their tokens do not
    depend on how the text was read; at most ``hold`` characters wait for a cut."""
    key, carry = None, ""
    for k, text in chunks:
        if k != key:
            if carry:
                yield key, carry
            key, carry = k, ""
        text = carry + text
        while len(text) > size:
            cut = bpe_cut(text[:size + 1])
            if not cut:
                if len(text) <= hold:
                    break
                cut = size  # a long run with no cut: the tokens may differ at this seam
            yield k, text[:cut]
            text = text[cut:]
        carry = text
    if carry:
        yield key, carry
