"""Layer `evaluation`: what is asked and how it is scored.

Pure (no torch): queries (every prompt of every prompt set about every fact) · matching (when an
answer counts) · metrics (aggregation of records into summary rows).
With torch: scoring (generation, option log-probabilities, records) · locality (probes, perplexity).
"""
