"""Unicode 16 letter and number classes for GPT-2's pre-tokenizer, and Hugging Face's NFC: compatibility
details, not the lesson.

Which characters are letters (``\\p{L}``) and numbers (``\\p{N}``) decides where GPT-2's regular
expression cuts a text into chunks, and it depends on the Unicode version of the regex engine.
tiktoken's (Rust) tables are Unicode 16.0; the ``regex`` module's are newer: in Unicode 17.0 some
code points that Unicode 16.0 left unassigned, hence "other" characters, became letters or numbers.
To split text exactly as tiktoken does, bpe.py's ``PreTokenizer`` splits a text that holds any of
them with ``\\p{L}`` and ``\\p{N}`` pinned to Unicode 16.0 (``pin_to_unicode_16``). The pinned
pattern is twice as slow in the regex module, so ordinary text keeps the plain one
(``has_unicode_17_letters`` decides). tests/test_bpe.py checks every code point of planes 0-3
against tiktoken's engine. Hugging Face's ``tokenizers`` (hf_json.py) splits by Oniguruma, whose tables
are Unicode 16.0 too.

Its NFC normalizer (Qwen's tokenizers use it) is older still: its crate, unicode-normalization-alignments,
has Unicode 9's tables, so combining marks added since are left where they are, where Python's
``unicodedata`` would reorder them. ``tokenizers_nfc`` leaves them alone too.
tests/test_hf_tokenizer.py checks every character with a combining class or a decomposition.
"""

from __future__ import annotations

import bisect
import unicodedata

import regex

# Letters (\p{L}) and numbers (\p{N}) first assigned in Unicode 17.0, as inclusive hex ranges.
_UNICODE_17_LETTERS = (
    "0558 058B-058C 088F 0C5C 0CDC 208F 209D-209F A7CE-A7CF A7D2 A7D4 A7DD A7E2 A7F1 AB6C-AB6D "
    "107BB-107BF 10940-10959 10EC5-10EC7 10ED9-10EEE 11B0A 11DB0-11DDB 11DF1 16EA0-16EB8 16EBB-16ED3 "
    "16FF2-16FF3 187F8-187FF 18CD6-18CDA 18D09-18D20 18D80-18DF2 18E00-19191 191A0-191D2 1B123-1B128 "
    "1B168 1D6A6 1DF1F-1DF24 1DF2B-1DF81 1DF90-1DF96 1DFCD-1DFFF 1E6C0-1E6DE 1E6E0-1E6E2 1E6E4-1E6E5 "
    "1E6E7-1E6ED 1E6F0-1E6F4 1E6FE-1E6FF 2B73A-2B73F 2B81E 2CEA2-2CEAD 323B0-33479 3D000-3FC3F")
_UNICODE_17_NUMBERS = "11DE0-11DE9 1246F 12475-1247F 12550-12686 16FF4-16FF6"


def _parse_ranges(spec: str) -> list[tuple[int, int]]:
    return [(int(a, 16), int(b or a, 16)) for a, _, b in (item.partition("-") for item in spec.split())]


def _class_items(ranges: list[tuple[int, int]]) -> str:
    return "".join(f"\\U{a:08X}" + (f"-\\U{b:08X}" if b != a else "") for a, b in ranges)


_NEW_RANGES = sorted(_parse_ranges(_UNICODE_17_LETTERS) + _parse_ranges(_UNICODE_17_NUMBERS))
_NEW_STARTS = [a for a, _ in _NEW_RANGES]
_FIRST_NEW = chr(_NEW_STARTS[0])


def pin_to_unicode_16(pattern: str) -> str:
    """``pattern`` with ``\\p{L}`` and ``\\p{N}`` limited to Unicode 16.0 (compile with ``regex.V1``)."""
    letters = f"[\\p{{L}}--[{_class_items(_parse_ranges(_UNICODE_17_LETTERS))}]]"
    numbers = f"[\\p{{N}}--[{_class_items(_parse_ranges(_UNICODE_17_NUMBERS))}]]"
    return pattern.replace(r"\p{L}", letters).replace(r"\p{N}", numbers)


def has_unicode_17_letters(text: str) -> bool:
    """True if ``text`` holds a letter or number that Unicode 16.0 did not have."""
    if text.isascii():
        return False
    for ch in set(text):
        if ch >= _FIRST_NEW:
            i = bisect.bisect_right(_NEW_STARTS, ord(ch)) - 1
            if i >= 0 and ord(ch) <= _NEW_RANGES[i][1]:
                return True
    return False


# Characters that take part in normalisation in Python (combining marks, three Dives Akuru letters that
# compose, and those Unicode 17 added) but that tokenizers' Unicode 9 tables do not know (measured).
_NFC_UNKNOWN = (
    "05C8-05C9 07FD 0897-089F 08CA-08D3 09FE 0C3C 0D3B-0D3C 0EBA 1715 1ABF-1AF0 1DF6-1DFA A82C 105C9 105E4 "
    "10D24-10D27 10D69-10D6D 10EAB-10EAC 10ECB-10ECF 10EF0-10EFB 10EFD-10EFF 10F46-10F50 10F82-10F85 11070 "
    "1133B 11383 11385 1138E 11391 113C5 113C7-113C8 113CE-113D0 1145E 11839-1183A 11930 11935 11938 "
    "1193D-1193E 11943 119E0 11A34 11A47 11A99 11D42 11D44-11D45 11D97 11F41-11F42 16121-16128 1612F "
    "16D68-16D6A 16FF0-16FF1 1D127-1D128 1D250-1D252 1D25B-1D25C 1D25F 1D280-1D281 1E08F 1E130-1E136 1E2AE "
    "1E2EC-1E2EF 1E4EC-1E4EF 1E5EE-1E5EF 1E6E3 1E6E6 1E6EE-1E6EF 1E6F5")
_NFC_UNKNOWN_PAT = regex.compile(f"([{_class_items(_parse_ranges(_NFC_UNKNOWN))}])")


def tokenizers_nfc(text: str) -> str:
    """Unicode NFC as Hugging Face's tokenizers computes it. An unknown character has combining class 0
    and composes with nothing, so nothing moves across it or joins it: cut the text there and
    normalise the pieces between."""
    if unicodedata.is_normalized("NFC", text):
        return text
    parts = _NFC_UNKNOWN_PAT.split(text)           # the unknown characters at the odd indices
    parts[::2] = [unicodedata.normalize("NFC", part) for part in parts[::2]]
    return "".join(parts)
