"""Zero-shot and retrieval metrics against hand-computed cases."""

import pytest
import torch

from compress.evaluate import recall_at, topk_accuracy


def test_topk_accuracy_hand_case():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    targets = torch.tensor([0, 1, 2])
    assert topk_accuracy(logits, targets, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, targets, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, targets, 5) == 1.0  # k larger than the class count


def test_recall_at_hand_case():
    # the right answers rank 1st, 2nd and 3rd
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.9, 0.7, 0.2]])
    correct = torch.eye(3, dtype=torch.bool)
    assert recall_at(similarity, correct, (1, 2, 3)) == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        3: 1.0,
    }


def test_recall_counts_identical_captions_as_matches():
    # images 0 and 1 share a caption: retrieving either one for that caption is right
    similarity = torch.tensor([[0.2, 0.9, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 0.9]])
    ids = torch.tensor([0, 0, 1])
    correct = ids[:, None] == ids[None, :]
    assert recall_at(similarity, correct, (1,)) == {1: 1.0}
    assert recall_at(similarity, torch.eye(3, dtype=torch.bool), (1,))[1] == pytest.approx(2 / 3)


def test_recall_ties_count_against_the_query():
    """A collapsed model (every score equal) must score chance, not perfect recall."""
    similarity = torch.zeros(4, 4)
    assert recall_at(similarity, torch.eye(4, dtype=torch.bool), (1, 4)) == {1: 0.0, 4: 1.0}
