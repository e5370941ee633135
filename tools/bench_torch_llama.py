#!/usr/bin/env python3
"""The training step of a LLaMA recipe's model in PyTorch eager, as the baseline of
tools/bench_llama_vs_torch.sh.

    python3 tools/bench_torch_llama.py RECIPE.yaml VOCAB [--threads N] [--reps N] [--steps N]
                                       [--warmup N]

Builds transformers' LlamaForCausalLM with the recipe's model dims (embed_dim, depth, heads,
kv_heads, mlp_ratio, rope_theta, tie_embeddings; vocab given, context data.seq_len), AdamW with
the recipe's optim section and its gradient clipping, and times forward + loss + backward + clip
+ step on one fixed batch of random ids [data.batch_size, data.seq_len], best of `reps` windows
of `steps` steps after `warmup` steps. Prints a config line on stderr and one JSON line on stdout:
{"bench":"train","case":...,"value":ms/step,"unit":"ms","tok_per_s":...}.
"""
import argparse
import json
import sys
import time

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("vocab", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    r = yaml.safe_load(open(a.recipe))
    m, d, o = r["model"], r["data"], r.get("optim", {})
    D, H = m["embed_dim"], m["heads"]
    B, L = d["batch_size"], d["seq_len"]
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=D, num_hidden_layers=m["depth"],
                      num_attention_heads=H, num_key_value_heads=m.get("kv_heads", H),
                      intermediate_size=round(m.get("mlp_ratio", 4) * D),
                      max_position_embeddings=L, rope_theta=m.get("rope_theta", 10000.0),
                      rms_norm_eps=1e-5, tie_word_embeddings=m.get("tie_embeddings", False),
                      attn_implementation="sdpa")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).train()
    betas = tuple(o.get("betas", [0.9, 0.999]))
    opt = torch.optim.AdamW(model.parameters(), lr=o.get("lr", 1e-3), betas=betas,
                            eps=o.get("eps", 1e-8), weight_decay=o.get("weight_decay", 0.05))
    clip = o.get("clip_grad_norm", 0)
    ids = torch.randint(0, a.vocab, (B, L))
    print(f"config: vocab={a.vocab} dim={D} depth={m['depth']} heads={H} "
          f"kv_heads={cfg.num_key_value_heads} intermediate={cfg.intermediate_size} batch={B} "
          f"seq_len={L} clip={clip} threads={a.threads}", file=sys.stderr)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()

    for _ in range(a.warmup):
        step()
    windows = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        windows.append((time.perf_counter() - t0) / a.steps)
    best = min(windows)
    print("windows (ms/step): " + " ".join(f"{w * 1e3:.2f}" for w in windows), file=sys.stderr)
    print(json.dumps({"bench": "train", "case": f"llama B={B} L={L} cpu {a.threads}t step",
                      "value": round(best * 1e3, 3), "unit": "ms",
                      "tok_per_s": round(B * L / best, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
