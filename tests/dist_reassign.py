"""Run by tests/test_distributed.py, with plain python (one process) or under torchrun: one path
assignment of a saved model on its training data, sharded when distributed; rank 0 saves the
model with the new paths to OUT and the objective to OUT/objective.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from deep_retrieval import DeepRetrieval, ProtocolConfig, load_dataset, make_split
from deep_retrieval.data.samples import TrainingSamples
from deep_retrieval.training import distributed
from deep_retrieval.training.batch import score_paths
from deep_retrieval.training.step import reassign_paths


def main(bundle: str, out: str) -> None:
    ctx = distributed.init_from_environment("cpu")
    model = DeepRetrieval.load(bundle, device="cpu")
    split = make_split(load_dataset("movielens-latest-small"), None, ProtocolConfig())
    train = split.train.rows(np.arange(ctx.rank, len(split.train), ctx.world))
    samples = TrainingSamples(train, model.config.train.history_len, seed=0)
    stats, _ = reassign_paths(model.state, score_paths(model.state, train, samples), seed=0)
    if ctx.rank == 0:
        model.save(out)
        (Path(out) / "objective.json").write_text(json.dumps(stats["objective"]))
    if ctx.active:
        # Leave together, with the process group torn down: a rank that exits while the other
        # is still saving can abort in the group's threads ("terminate called without an active
        # exception", seen in CI).
        distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
