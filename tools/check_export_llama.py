#!/usr/bin/env python3
"""Checks a `vnm export` of a LLaMA run against the Python ecosystem.

    vnm export RUN_DIR --out DIR --sample 32
    python3 tools/check_export_llama.py DIR

transformers loads DIR (config.json + model.safetensors, the adapters merged) and its logits for
DIR/sample.safetensors' input_ids must match the logits vnm computed (relative error, max |a-b| /
max |b|, at most 1e-4). When DIR/base/ and DIR/adapter/ exist (a run without masks), peft loads the
adapter onto the base and must match too, and so must merge_and_unload() of that model.
Needs: pip install torch transformers peft safetensors. Exit 0 when everything matches, 1 if not.
"""
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

TOL = 1e-4


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def logits_of(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits.float()


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    sample = load_file(os.path.join(out, "sample.safetensors"))
    ids, want = sample["input_ids"], sample["logits"]
    torch.set_num_threads(1)
    load = dict(attn_implementation="eager", torch_dtype=torch.float32)
    checks = [("transformers, merged export",
               logits_of(LlamaForCausalLM.from_pretrained(out, **load), ids))]
    adapter = os.path.join(out, "adapter")
    if os.path.isdir(adapter):
        base = LlamaForCausalLM.from_pretrained(os.path.join(out, "base"), **load)
        peft_model = PeftModel.from_pretrained(base, adapter)
        checks.append(("peft, base + adapter", logits_of(peft_model, ids)))
        checks.append(("peft, merge_and_unload", logits_of(peft_model.merge_and_unload(), ids)))
    ok = True
    for name, got in checks:
        e = rel_err(got, want)
        ok &= e <= TOL
        print(f"{name}: logits relative error {e:.2e} ({'ok' if e <= TOL else 'FAIL'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
