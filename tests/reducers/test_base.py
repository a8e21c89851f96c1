"""What the reducer contract gives every reducer: seeded draws that any device and torch.compile agree on."""

from __future__ import annotations

import torch


def test_seeded_keys_are_distinct_deterministic_and_seed_dependent():
    from tomebench.reducers.base import seeded_keys

    keys = seeded_keys(7, 500)
    assert keys.dtype == torch.int64 and len(set(keys.tolist())) == 500  # a bijective hash: never a tie
    assert torch.equal(keys, seeded_keys(7, 500)) and not torch.equal(keys, seeded_keys(8, 500))
    assert torch.equal(seeded_keys(7, 100), keys[:100])  # position i's key does not depend on n
    # Not the identity order: the ranks of consecutive positions look shuffled.
    order = keys.argsort()
    assert (order[1:] > order[:-1]).float().mean().item() < 0.7
