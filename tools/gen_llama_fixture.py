#!/usr/bin/env python3
"""tools/gen_llama_fixture.py — writes the Hugging Face conformance fixtures of tests/test_llama.c
(and of the LoRA tests) with real transformers and peft.

Written with torch 2.15.0, transformers 5.24.0, peft 0.21.2, safetensors 0.8.0 (CPU); each
expected file records the versions it was made with in its metadata ("generated_by").

Run from the repository root (pip install transformers peft; torch and safetensors installed):
  python3 tools/gen_llama_fixture.py [out_dir]          # out_dir defaults to tests/fixtures

It writes two folders, each a transformers model directory plus what the model computed:

  llama_tiny/   LlamaForCausalLM: vocab 64, hidden 32, intermediate 88, 2 layers, 4 query heads
                over 2 KV heads (GQA), rope_theta 1e4, rms_norm_eps 1e-5, untied lm_head, eager
                attention, float32
    config.json, model.safetensors      save_pretrained of the f32 model (HF names)
    bf16/                               the same weights saved by save_pretrained in bfloat16 as
                                        two shards + model.safetensors.index.json (every weight is
                                        bf16-exact, so this is the same model bit for bit)
    expected.safetensors                input_ids i64 [2, 12]; logits f32 [2, 12, 64]; loss [1]
                                        (the model's own loss with labels = input_ids: mean
                                        cross-entropy of logits[:, :-1] against input_ids[:, 1:]);
                                        grad.<name> for every parameter, of that loss
    adapter/                            peft LoraConfig(r=4, lora_alpha=8, lora_dropout=0,
                                        target_modules="all-linear") on that base (q/k/v/o and
                                        gate/up/down of every layer; not lm_head), every lora_A and
                                        lora_B set to seeded random values, save_pretrained:
                                        adapter_config.json + adapter_model.safetensors
    adapter_expected.safetensors        input_ids; logits, loss (same labels) of the adapted
                                        model; grad.<key of adapter_model.safetensors> for every
                                        LoRA tensor; merged_logits (merge_and_unload() of that
                                        model); rslora_logits (the same A and B under
                                        use_rslora=True: scale alpha/sqrt(r) instead of alpha/r)

  llama_tied/   vocab 48, hidden 24, intermediate 40, 2 layers, 4 heads = 4 KV heads (plain
                multi-head), head_dim 8 given explicitly (not hidden/heads = 6, so q_proj is
                [32, 24] and o_proj [24, 32]), attention_bias and mlp_bias on, rope_theta 5e5,
                rms_norm_eps 1e-6, tie_word_embeddings true (no lm_head.weight in the file)
    config.json, model.safetensors, expected.safetensors as above

Weights: transformers' own init is replaced by a seeded normal draw, std 0.2 for every matrix and
bias, 1 + 0.2·normal for the RMSNorm weights (ones would hide a swapped or ignored norm), each
then rounded to the nearest bfloat16 and stored as float32. Forward and backward run in float32
in eval mode (no dropout) on one CPU thread. Fixed seeds (and a fixed Python hash seed: the script
restarts itself with PYTHONHASHSEED=0, as peft writes target_modules in set order): a rerun with
the same library versions writes the same bytes.
"""
import copy
import json
import os
import shutil
import sys

import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

BATCH, SEQ = 2, 12
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False, max_position_embeddings=64)
TIED = dict(vocab_size=48, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, head_dim=8, attention_bias=True,
            mlp_bias=True, rope_theta=500000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
            max_position_embeddings=64)


def versions():
    """One metadata key: the library writes several in hash-map order, which varies by run."""
    return {"generated_by": f"tools/gen_llama_fixture.py with torch {torch.__version__}, "
                            f"transformers {transformers.__version__}, peft {peft.__version__}, "
                            f"safetensors {safetensors.__version__}"}


def bf16_exact(t):
    return t.to(torch.bfloat16).to(torch.float32)


def make_model(dims, seed):
    cfg = LlamaConfig(**dims, attn_implementation="eager", dtype="float32")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(bf16_exact(noise + 1.0 if name.endswith("norm.weight") else noise))
    return model


def input_ids(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (BATCH, SEQ), generator=g, dtype=torch.int64)


def run(model, ids):
    """logits, loss and the gradients of the trainable parameters (by in-memory name)."""
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.detach().clone().contiguous()
             for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach().contiguous(), out.loss.detach().reshape(1), grads


def save_model_dir(model, path):
    """config.json + model.safetensors as transformers writes them, nothing else."""
    model.save_pretrained(path)
    for extra in os.listdir(path):
        if extra not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(path, extra))


def save_bf16_shards(model, path):
    """The bf16 copy as two shards through save_pretrained (max_shard_size below half the total,
    above its largest tensor) plus its index."""
    total = sum(p.numel() * 2 for p in model.parameters())
    # a copy: converting the model in place and back would leave its RoPE frequency buffer
    # rounded to bf16, and every later output of it off by ~1e-3
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(path, max_shard_size=total * 3 // 5)
    shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], \
        shards
    for extra in os.listdir(path):
        if extra not in shards + ["config.json", "model.safetensors.index.json"]:
            os.remove(os.path.join(path, extra))


def write_expected(path, ids, logits, loss, grads, extra=None):
    out = {"input_ids": ids, "logits": logits, "loss": loss}
    out.update({"grad." + n: g for n, g in grads.items()})
    out.update(extra or {})
    save_file(out, path, metadata=versions())


def base_case(out_dir, name, dims, seed, bf16_copy):
    path = os.path.join(out_dir, name)
    shutil.rmtree(path, ignore_errors=True)
    model = make_model(dims, seed)
    ids = input_ids(dims["vocab_size"], seed + 2)
    logits, loss, grads = run(model, ids)
    save_model_dir(model, path)
    saved = load_file(os.path.join(path, "model.safetensors"))
    assert set(grads) == set(saved), "a gradient for every tensor of the file (tied: no lm_head)"
    if bf16_copy:
        save_bf16_shards(model, os.path.join(path, "bf16"))
    write_expected(os.path.join(path, "expected.safetensors"), ids, logits, loss, grads)
    return model, ids


def set_lora(model, seed):
    """Every lora_A and lora_B from a seeded normal (std 0.2), in parameter order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def lora_logits(base_dir, ids, lora_state, **extra):
    """logits of a fresh base from base_dir with LoRA tensors lora_state (in-memory names)."""
    base = LlamaForCausalLM.from_pretrained(base_dir, attn_implementation="eager").eval()
    model = get_peft_model(base, LoraConfig(**LORA, **extra))
    missing = set(lora_state) - {n for n, _ in model.named_parameters()}
    assert not missing, missing
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in lora_state:
                p.copy_(lora_state[n])
        return model(input_ids=ids).logits.contiguous()


def adapter_case(out_dir, base_model, ids, seed):
    base_dir = os.path.join(out_dir, "llama_tiny")
    adapter_dir = os.path.join(base_dir, "adapter")
    model = get_peft_model(base_model, LoraConfig(**LORA))
    set_lora(model, seed)
    logits, loss, grads = run(model, ids)
    lora_state = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert set(grads) == set(lora_state), "only the LoRA tensors train"

    model.save_pretrained(adapter_dir)
    for extra in os.listdir(adapter_dir):
        if extra not in ("adapter_config.json", "adapter_model.safetensors"):
            os.remove(os.path.join(adapter_dir, extra))
    stored = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    # peft drops the adapter name (".default") from the keys it stores
    by_key = {n.replace(".default", ""): g for n, g in grads.items()}
    assert set(by_key) == set(stored), sorted(set(by_key) ^ set(stored))
    for n, v in lora_state.items():
        assert torch.equal(stored[n.replace(".default", "")], v), n

    with torch.no_grad():
        merged = model.merge_and_unload()
        merged_logits = merged(input_ids=ids).logits.contiguous()
    rslora_logits = lora_logits(base_dir, ids, lora_state, use_rslora=True)
    write_expected(os.path.join(base_dir, "adapter_expected.safetensors"), ids, logits, loss,
                   by_key, {"merged_logits": merged_logits, "rslora_logits": rslora_logits})


def main():
    # peft keeps "all-linear" as a set of module names and writes it in set order, which follows
    # the string hash: a fixed hash seed makes adapter_config.json the same on every run.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv,
                  dict(os.environ, PYTHONHASHSEED="0"))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tiny, ids = base_case(out_dir, "llama_tiny", TINY, 1234, bf16_copy=True)
    base_case(out_dir, "llama_tied", TIED, 5678, bf16_copy=False)
    adapter_case(out_dir, tiny, ids, 91011)
    for name in ("llama_tiny", "llama_tied"):
        with open(os.path.join(out_dir, name, "config.json")) as f:
            cfg = json.load(f)
        assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]


if __name__ == "__main__":
    main()
