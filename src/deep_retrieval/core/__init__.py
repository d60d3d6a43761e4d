"""The Deep Retrieval algorithms as plain functions: path codec and map, beam search, path
assignment, torch modules, the recommend contract."""
