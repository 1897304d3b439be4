"""The scaling predictor's model: what a training step costs at any world size, computed without running it.

    cost.py        bytes each strategy's collectives put on the wire per step, and memory per rank
    alpha_beta.py  how long one collective takes on a link (latency per algorithm step + bytes over bus bandwidth)
    split.py       the GEMMs one tensor-parallel rank runs, and the split probe's rows: efficiency per degree, slowdown
    scaling.py     step time, tokens/s per GPU and scaling efficiency: compute per rank + exposed communication

Only the model interface (src/model) and the run specification (src/spec.py) lie below it; the harness reads
cost.py for a multi-process row's estimates, the reports and `python -m src.profiling.predict` read scaling.py.
"""
