"""Tokenizers: text -> token ids -> text (chapter 2 of the book).

Read them in this order: simple.py (the book's word-level tokenizer, 2.2-2.4), char.py (one id per
character), naive_bpe.py (byte-pair encoding in its plainest form, 2.5), bpe.py (GPT-2's tokenizer,
the same algorithm made fast, equal to tiktoken), train_bpe.py (learning a BPE vocabulary from your
text). hf_json.py reads a Hugging Face model's tokenizer.json (Llama 3, Qwen, SmolLM2) into the same
engine, and chat_template.py renders the chat template such a model was fine-tuned with. spec.py is
what a checkpoint records of a tokenizer; unicode16.py holds compatibility details of the
pre-tokenizers and of Hugging Face's NFC.
"""
