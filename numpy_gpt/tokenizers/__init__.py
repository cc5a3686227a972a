"""Tokenizers: text -> token ids -> text (chapter 2 of the book).

Read them in this order: simple.py (the book's word-level tokenizer, 2.2-2.4), char.py (one id per
character), naive_bpe.py (byte-pair encoding in its plainest form, 2.5), bpe.py (GPT-2's tokenizer,
the same algorithm made fast, equal to tiktoken), train_bpe.py (learning a BPE vocabulary from your
text). unicode16.py is a compatibility detail of bpe.py's pre-tokenizer.
"""
