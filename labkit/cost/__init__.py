"""Cost (roadmap step 4): turn measured throughput into dollars, and say what is modelled.

    per_token.py     $/1M tokens at the throughput that still meets the SLO (output-only and
                     prompt + output conventions), savings, and the sentence that states them
    catalog.py       the price catalog (SkyPilot's shape, sourced rows, a CPU-tier row),
                     read by header, validated with messages that name the fix
    data/prices.csv  the shipped catalog
    monthly.py       traffic profile → replicas at peak with headroom → $/month, sensitivity
    spot.py          Young and Daly checkpoint intervals, spot traces, a Monte Carlo of a
                     preemptible job, spot replicas for serving
    quantization.py  weight and KV memory (exact) and speed-ups (modelled from cited figures)
    case_study.py    "I reduced monthly spend by X %": the waterfall from the run's records
    cli.py           `labkit cost prices|per-token|monthly|spot`
"""
