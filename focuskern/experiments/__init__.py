"""Applications built on the library: the demo, the evaluations (entity coverage, lost in the middle,
the demo's keywords with the attention lever, head selection from the readout), ``focuskern inspect``,
their metrics, prompts and model loading.  Nothing in the library imports this package; result
metadata lives in :mod:`focuskern.metadata`."""
