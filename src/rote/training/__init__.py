"""Layer `training` (torch): encoding, the one training loop, the phases, LoRA, models, checkpoints.

encode (token ids and the loss mask) · loop (the one training loop) · phases (phase 1 and phase 2:
examples and training) · lora · models (the bundled model, loading, key tokens) · checkpoint ·
processes (several processes: who writes, evaluation's batches shared out).
Imports the layers below (config, data); never evaluation, report or the runner.
"""
