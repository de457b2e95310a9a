"""Locate-then-edit model editors (ROME, MEMIT, AlphaEdit), beside training: they change the MLP
down-projections of a few layers in closed form instead of running an optimizer over the weights.

- `requests`: what is edited, one request per fact and training prompt, as phase 2 trains it;
- `locate`: where (a Llama-style model's `model.layers[i].mlp.down_proj`), and the activations
  read there (the keys at the subject's last token, the layer outputs);
- `stats`: the keys' second moment over general text (MEMIT's and ROME's covariance), and
  AlphaEdit's null-space projector built from it;
- `editors`: the target values (an optimized shift of the residual stream) and the three updates.

The arms `rome`, `memit` and `alphaedit` (rote.arms) train their phase 1 with `editors.edit`
(rote.train_stage.TRAINERS["edit"]); the result is a plain Hugging Face checkpoint like any other.
"""
