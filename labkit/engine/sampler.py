"""Pick the next token from the logits: greedy, or temperature + top-p with a seed.

- greedy (temperature 0): argmax. Deterministic, and what the correctness tests compare
  with transformers' `generate(do_sample=False)`.
- temperature T: softmax(logits / T). T < 1 sharpens the distribution, T > 1 flattens it.
- top-p (nucleus) p: keep the smallest set of most likely tokens whose probabilities add
  up to at least p, renormalise, sample from those. Cuts off the long tail of junk tokens.
- seed: each request owns a torch.Generator, so its samples do not depend on what else
  happens to be in the batch (same seed + same prompt → same text, under any load).
"""

from __future__ import annotations


def sample(logits, seqs) -> list[int]:
    """logits: float32 [len(seqs), vocab]. Returns one token id per sequence."""
    import torch

    tokens = logits.argmax(dim=-1).tolist()  # one vectorised argmax covers every greedy row
    for i, seq in enumerate(seqs):
        p = seq.params
        if p.greedy:
            continue
        if getattr(seq, "generator", None) is None:
            seq.generator = torch.Generator()  # on CPU: works whatever device the model is on
            if p.seed is not None:
                seq.generator.manual_seed(p.seed)
            else:
                seq.generator.seed()  # fresh entropy from the OS
        probs = torch.softmax(logits[i].cpu() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            probs = top_p_filter(probs, p.top_p)
        tokens[i] = int(torch.multinomial(probs, 1, generator=seq.generator))
    return tokens


def top_p_filter(probs, top_p: float):
    """Zero every token outside the nucleus and renormalise. probs: [vocab], sums to 1."""
    import torch

    sorted_probs, order = torch.sort(probs, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=0) - sorted_probs
    # Keep a token if the tokens ranked above it do not reach top_p yet (the top one always).
    sorted_probs[mass_before >= top_p] = 0.0
    out = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return out / out.sum()
