"""The benchmark arguments ``make gpu-report`` runs each stage with (``benchmarks/gpu_report.py``): one
definition for the report and for the floors predicted from the same sizes (``benchmarks/gpu_prediction.py``).
An empty list runs the benchmark's defaults."""

LOGITS = ["--warmup-ms", "10", "--rep-ms", "50", "--host-budget-s", "0.1"]
STATE: list[str] = []
ATTENTION = ["--prefill", "4096", "16384", "--decode", "16384", "131072", "--decode-batch", "1", "64",
             "--warmup-ms", "10", "--rep-ms", "50"]
GENERATE: list[str] = []
