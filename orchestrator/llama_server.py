"""The dev stack's llama.cpp server: llama-cpp-python's own server (`python -m llama_cpp.server`, the same
flags), with a prompt cache whose size limit bounds what it holds.

llama-cpp-python's RAM prompt cache (`--cache True --cache_type ram --cache_size BYTES`) saves the model's
state after every completion and restores the longest saved prefix of the next prompt, so a conversation's
next turn evaluates only its new tokens even after other conversations used the server. Each saved state
also copies up to `n_batch` rows of logits (512 × SmolLM2's 49,152-token vocabulary × 4 bytes = 100 MB),
which its size limit does not count: ten times the counted KV state for a short prompt. Here a saved state
keeps only the last row (the server evaluates at least one token again after a restore, so the rows are never
read) and the limit counts it, so `--cache_size` is what the cache takes. Pinned with llama-cpp-python
0.3.36 (pyproject.toml); tests/orchestrator/test_llama_prompt_cache.py checks it on the real server."""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp
from llama_cpp.llama import LlamaState
from llama_cpp.llama_cache import LlamaRAMCache
from llama_cpp.server.__main__ import main


class CountedRAMCache(LlamaRAMCache):
    """LlamaRAMCache whose states keep only their last row of logits, counted in its size."""

    @property
    def cache_size(self) -> int:
        return sum(state.llama_state_size + state.scores.nbytes for state in self.cache_state.values())

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        value.scores = value.scores[-1:].copy()  # `load_state` broadcasts it over the rows it restores
        super().__setitem__(key, value)


if __name__ == "__main__":
    llama_cpp.LlamaRAMCache = CountedRAMCache  # type: ignore[misc]  # what the server builds for `--cache True`
    main()
