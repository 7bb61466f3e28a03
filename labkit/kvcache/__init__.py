"""KV cache: paged blocks, paged attention, and prefix caching (vLLM hash vs SGLang radix).

block_pool.py       blocks, ref counts, free queue, block tables, copy-on-write fork
paged_attention.py  attention through block tables (matches dense SDPA)
paged_vs_dense.py   the op vs dense SDPA on random batches: error and decode timing
waste.py            contiguous reservation vs paged blocks: the memory-waste study
prefix_cache.py     the interface both prefix caches implement (+ NoPrefixCache)
hash_cache.py       vLLM v1: chained block hashes, full blocks, LRU free queue
radix_cache.py      SGLang: radix tree, token-granular, lock_ref, LRU leaf eviction
traces.py           synthetic request traces for the classic prefix-sharing workloads
trace_file.py       the JSONL trace format: write, and read with line-numbered errors
simulate.py         replay a trace against a cache (`labkit kvcache simulate`)
cli.py              `labkit kvcache simulate|trace`

Labs 20 and 21's demos and figures are in labkit.labs (l20_paged_attention, l21_*).
"""
