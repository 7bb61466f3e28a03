"""Cost: turn measured throughput into dollars.

    per_token.py   $/1M output tokens at the throughput that still meets the SLO, the
                   saving of one config against another, and the sentence that states it

The cost issue deepens this package (price catalog, monthly spend, spot, quantization).
"""
