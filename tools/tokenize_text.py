#!/usr/bin/env python3
"""Tokenizes text files into vnm token shards (the VNMTOKEN format described in data/data.h).

    python3 tools/tokenize_text.py --out DIR (--byte | --hf-tokenizer NAME_OR_PATH |
                              --sentencepiece MODEL) [--doc-sep LINE] [--val-every K]
                              [--shard-tokens N] FILE...

Documents, splits and shards follow the rules of `vnm tokenize` (train/tokenize.c):
- a line is the bytes up to and including '\\n'; with --doc-sep, a line equal to LINE (after its
  '\\n' and one '\\r' before it are removed) ends the document, and is not part of any;
  without --doc-sep each file is one document; a document never spans two files; empty documents
  are skipped;
- documents are numbered from 1 across all files in order; every K-th one goes to the val split
  (K = --val-every, default 20; 0: no val split), the others to train;
- each split's token stream is cut into DIR/<split>-00000.tok, ... of at most N tokens
  (--shard-tokens, default 100000000), each written to <path>.tmp, flushed to disk and renamed; a
  split without tokens gets no shard, and shards of a split numbered past the ones written (left by
  an earlier, longer run) are removed;
- one JSON line is printed: {"documents":D,"train":{"documents":..,"tokens":..,"shards":..},
  "val":{...}}.

Tokenizers:
  --byte                 ids 0..255 are the bytes, 256 BOS, 257 EOS, vocab_size 258; a document is
                         its bytes then EOS. Byte-identical to `vnm tokenize` with the same flags:
                         tests/test_tokens.c compares vnm's output with tests/fixtures/tokens_byte/,
                         made by
                           python3 tools/tokenize_text.py --byte --out tests/fixtures/tokens_byte \\
                             --doc-sep % --val-every 3 --shard-tokens 200 \\
                             tests/fixtures/tokens_input_a.txt tests/fixtures/tokens_input_b.txt
  --hf-tokenizer NAME    transformers' AutoTokenizer (a local path, or a name in the local cache):
                         the tokenizer's own special tokens (a BOS where it adds one), then its EOS
                         when it has one; vocab_size = len(tokenizer) (added tokens included)
  --sentencepiece MODEL  a sentencepiece model file: BOS (when the model has one), the pieces, EOS
                         (when the model has one); vocab_size = the number of pieces
Text is decoded as UTF-8 (invalid bytes replaced) for the last two. Only the chosen tokenizer's
library is imported. Exit codes: 0 ok, 1 runtime failure, 2 bad input.
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

MAGIC = b"VNMTOKEN"
VERSION = 1
NO_EOS = 0xFFFFFFFF
MAX_VOCAB = 1 << 31
BYTE_VOCAB, BYTE_BOS, BYTE_EOS = 258, 256, 257


class BadInput(Exception):
    """Input the user can fix: exit code 2."""


class ByteTokenizer:
    vocab_size = BYTE_VOCAB
    eos_id = BYTE_EOS

    def encode(self, doc):
        ids = np.empty(len(doc) + 1, dtype=np.uint32)
        ids[:-1] = np.frombuffer(doc, dtype=np.uint8)
        ids[-1] = BYTE_EOS
        return ids


class HFTokenizer:
    def __init__(self, name):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(name)
        self.vocab_size = len(self.tok)
        eos = self.tok.eos_token_id
        self.eos_id = NO_EOS if eos is None else int(eos)

    def encode(self, doc):
        ids = list(self.tok(doc.decode("utf-8", errors="replace"))["input_ids"])
        if self.eos_id != NO_EOS and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
        return np.asarray(ids, dtype=np.uint32)


class SentencePieceTokenizer:
    def __init__(self, model):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=model)
        self.vocab_size = int(self.sp.get_piece_size())
        self.bos = int(self.sp.bos_id())
        eos = int(self.sp.eos_id())
        self.eos_id = NO_EOS if eos < 0 else eos

    def encode(self, doc):
        ids = self.sp.encode(doc.decode("utf-8", errors="replace"))
        if self.bos >= 0:
            ids = [self.bos] + ids
        if self.eos_id != NO_EOS:
            ids = ids + [self.eos_id]
        return np.asarray(ids, dtype=np.uint32)


def shard_path(out, split, k):
    return os.path.join(out, f"{split}-{k:05d}.tok")


def shard_numbers(out, split):
    """Numbers of the split's shards in out, spelled exactly as the writers spell them."""
    pattern = re.compile(re.escape(split) + r"-([0-9]+)\.tok")
    found = []
    for name in os.listdir(out):
        m = pattern.fullmatch(name)
        if m and f"{int(m.group(1)):05d}" == m.group(1):
            found.append(int(m.group(1)))
    return sorted(found)


class SplitWriter:
    """Streams one split into shards of at most shard_tokens tokens: tokens go to <path>.tmp behind
    a placeholder header; a full shard gets its header, is flushed and renamed into place."""

    def __init__(self, out, split, vocab_size, eos_id, shard_tokens):
        if not 1 <= vocab_size <= MAX_VOCAB:
            raise BadInput(f"vocab_size {vocab_size}, expected 1..{MAX_VOCAB}")
        if eos_id != NO_EOS and eos_id >= vocab_size:
            raise BadInput(f"eos_id {eos_id}, expected < vocab_size {vocab_size}")
        self.out, self.split = out, split
        self.vocab_size, self.eos_id = vocab_size, eos_id
        self.shard_tokens = shard_tokens
        self.dtype = np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")
        self.file = None
        self.count = 0  # tokens in the open shard
        self.shards = 0  # completed
        self.tokens = 0
        self.documents = 0

    def append(self, ids):
        if ids.size and int(ids.max()) >= self.vocab_size:
            bad = int(ids[ids >= self.vocab_size][0])
            raise BadInput(f"split '{self.split}' of '{self.out}': token {bad}, expected < "
                           f"vocab_size {self.vocab_size}")
        while ids.size:
            if self.file is None:
                self.path = shard_path(self.out, self.split, self.shards)
                self.file = open(self.path + ".tmp", "wb")
                self.file.write(bytes(32))
                self.count = 0
            m = min(ids.size, self.shard_tokens - self.count)
            self.file.write(ids[:m].astype(self.dtype).tobytes())
            self.count += m
            self.tokens += m
            ids = ids[m:]
            if self.count == self.shard_tokens:
                self._finish()

    def _finish(self):
        header = struct.pack("<8sIIQII", MAGIC, VERSION, self.dtype.itemsize, self.count,
                             self.vocab_size, self.eos_id)
        self.file.seek(0)
        self.file.write(header)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        os.replace(self.path + ".tmp", self.path)
        self.shards += 1

    def close(self):
        if self.file is not None:
            self._finish()
        for k in shard_numbers(self.out, self.split):
            if k >= self.shards:
                os.remove(shard_path(self.out, self.split, k))

    def abort(self):
        if self.file is not None:
            self.file.close()
            os.remove(self.path + ".tmp")
            self.file = None


def documents(path, sep):
    """The non-empty documents of one file, as bytes."""
    with open(path, "rb") as f:
        if sep is None:
            doc = f.read()
            if doc:
                yield doc
            return
        parts = []
        for line in f:
            content = line[:-1] if line.endswith(b"\n") else line
            if content.endswith(b"\r"):
                content = content[:-1]
            if content == sep:
                if parts:
                    yield b"".join(parts)
                parts = []
            else:
                parts.append(line)
        if parts:
            yield b"".join(parts)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tokenize_text.py",
        description="Tokenize text files into vnm token shards (see the module docstring).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--byte", action="store_true", help="byte-level (vnm tokenize's ids)")
    which.add_argument("--hf-tokenizer", metavar="NAME_OR_PATH",
                       help="transformers AutoTokenizer")
    which.add_argument("--sentencepiece", metavar="MODEL", help="sentencepiece model file")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--doc-sep", metavar="LINE",
                   help="lines equal to LINE separate documents (default: one per file)")

    def count(lo):
        def parse(s):
            try:
                v = int(s)
            except ValueError:
                v = lo - 1
            if v < lo:
                raise argparse.ArgumentTypeError(f"expected an integer ≥ {lo}, got '{s}'")
            return v
        return parse

    p.add_argument("--val-every", type=count(0), default=20, metavar="K",
                   help="every K-th document goes to val (default 20; 0: no val split)")
    p.add_argument("--shard-tokens", type=count(1), default=100000000, metavar="N",
                   help="at most N tokens per shard (default 100000000)")
    p.add_argument("files", nargs="+", metavar="FILE")
    return p.parse_args(argv)


def run(args):
    for path in args.files:
        if os.path.isdir(path):
            raise BadInput(f"input '{path}' is a directory, expected a text file")
        if not os.access(path, os.R_OK):
            raise BadInput(f"cannot open input '{path}'")
    if args.byte:
        tok = ByteTokenizer()
    elif args.hf_tokenizer:
        tok = HFTokenizer(args.hf_tokenizer)
    else:
        tok = SentencePieceTokenizer(args.sentencepiece)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise BadInput(f"--out '{args.out}': cannot create the directory: {e.strerror}")
    sep = None if args.doc_sep is None else os.fsencode(args.doc_sep)
    writers = [SplitWriter(args.out, s, tok.vocab_size, tok.eos_id, args.shard_tokens)
               for s in ("train", "val")]
    total = 0
    try:
        for path in args.files:
            for doc in documents(path, sep):
                total += 1
                w = writers[args.val_every > 0 and total % args.val_every == 0]
                w.append(tok.encode(doc))
                w.documents += 1
        if total == 0:
            raise BadInput(f"empty input: no document in the {len(args.files)} file(s)")
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for w in writers:
        w.close()
    summary = {"documents": total}
    for name, w in zip(("train", "val"), writers):
        summary[name] = {"documents": w.documents, "tokens": w.tokens, "shards": w.shards}
    print(json.dumps(summary, separators=(",", ":")))


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except BadInput as e:
        print(f"tokenize_text.py: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"tokenize_text.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
