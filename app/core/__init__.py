"""The protocol-free core: the loaded variants and what a request does with them.

    service.py        InferenceService: open a ticket, run a typed request on it (the front doors' one entry)
    ticket.py         a request's ticket: its variant (leased), deadline and queue places
    requests.py       the typed requests and outcomes
    pool.py           the registry's variants: loading, load/unload at run time, leases
    served_variant.py one loaded variant: its detector, batcher and latencies; the per-image work
    batching.py       MicroBatcher: bounded queue, deadline-aware admission, worker thread
    forward_cost.py   what a forward costs, learned from the forwards that ran
    device_lane.py    one forward at a time per device
    variant_choice.py variant=auto
    statistics.py     per-variant inference statistics (Triton's), recorded by the core
    decode.py         upload bytes → checked image
    memory.py         memory given back to the OS when idle
    metrics.py, record.py, errors.py

Nothing here imports the front doors (``app.api``, ``app.oip``) or the HTTP server (``app.server``).
"""
