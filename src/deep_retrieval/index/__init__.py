"""A fitted model's state (``state.DRState``) and the functions over it: retrieval, bundle,
catalogue, ids, diagnostics."""
