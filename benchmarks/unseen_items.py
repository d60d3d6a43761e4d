"""Share of items, and of held-out (truth) items, that no training user touched, in bench-speed's
planted corpus: such items keep DR's random initial paths, which bounds DR's truth recall.

    .venv/bin/python benchmarks/unseen_items.py 1000000 100000    # n_items n_users
    .venv/bin/python benchmarks/unseen_items.py 10000000 500000
"""

from __future__ import annotations

import sys

import numpy as np

from deep_retrieval.data.corpus import make_corpus


def main() -> None:
    n_items, n_users = int(sys.argv[1]), int(sys.argv[2])
    corpus = make_corpus(n_users, n_items, n_users * 12, dim=64, seed=0)  # bench-speed's shape
    split = corpus.split(1000, seed=0)
    seen = np.zeros(n_items, bool)
    seen[split.train.items] = True
    truth = split.test_truth.items
    print(f"{n_items:,} items: {1 - seen.mean():.3f} never in training;"
          f" {1 - seen[truth].mean():.3f} of the held-out items")


if __name__ == "__main__":
    main()
