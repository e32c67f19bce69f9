"""tailor.route.calibration: ECE, reliability bins, temperature scaling, escalation breakdowns."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.errors import TailorError
from tailor.route import ece, escalation_by_bins, fit_temperature, nll, per_class_escalation, reliability


def sampled_labels(logits: torch.Tensor, seed: int) -> torch.Tensor:
    """Labels drawn from softmax(logits): a model whose softmax is exactly calibrated."""
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)


def test_ece_matches_a_hand_computed_two_bin_example() -> None:
    # two classes; confidences 0.9, 0.9 (one right, one wrong) and 0.6 (right)
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    logits = p.log()
    # bins of width 0.5: the 0.6 and 0.9 confidences both land in (0.5, 1.0]: mean conf 0.8, accuracy 2/3
    assert ece(logits, labels, bins=2) == pytest.approx(abs(0.8 - 2 / 3), abs=1e-9)
    # 10 bins: (0.5, 0.6] holds 0.6 (acc 1), (0.8, 0.9] holds both 0.9 (acc 0.5)
    expected = 1 / 3 * abs(1 - 0.6) + 2 / 3 * abs(0.5 - 0.9)
    assert ece(logits, labels, bins=10) == pytest.approx(expected, abs=1e-9)


def test_a_calibrated_model_has_small_ece_and_an_overconfident_one_large() -> None:
    torch.manual_seed(0)
    logits = torch.randn(20000, 10) * 2
    labels = sampled_labels(logits, 1)
    assert ece(logits, labels) < 0.02
    assert ece(logits * 3, labels) > 0.15  # sharpened softmax: confidence far above accuracy


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), classes=st.integers(2, 6), bins=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_ece_is_a_weighted_gap_in_unit_range_and_ignores_order(n: int, classes: int, bins: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * 3
    labels = torch.randint(0, classes, (n,), generator=generator)
    value = ece(logits, labels, bins)
    assert 0.0 <= value <= 1.0
    order = torch.randperm(n, generator=generator)
    assert ece(logits[order], labels[order], bins) == pytest.approx(value, abs=1e-12)
    table = reliability(logits, labels, bins)
    assert len(table) == bins and sum(b.count for b in table) == n
    for b in table:
        assert b.count == 0 or b.low < b.confidence <= b.high + 1e-12


def test_temperature_scaling_recovers_the_sharpening_factor() -> None:
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 10) * 1.5
    labels = sampled_labels(true_logits, 2)
    sharpened = true_logits * 2.5  # an over-confident stage
    temperature = fit_temperature(sharpened, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    assert nll(sharpened, labels, temperature) < nll(sharpened, labels)
    assert ece(sharpened, labels, temperature=temperature) < ece(sharpened, labels) / 3
    # under-confident logits get T < 1
    assert fit_temperature(true_logits / 2, labels) < 0.6


def test_temperature_fit_rejects_bad_input() -> None:
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    with pytest.raises(TailorError, match="labels"):
        fit_temperature(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(TailorError, match="lie in"):
        fit_temperature(logits, torch.full((8,), 3))
    with pytest.raises(TailorError, match="NaN"):
        fit_temperature(torch.full((8, 3), float("nan")), labels)
    with pytest.raises(TailorError, match="temperature"):
        ece(logits, labels, temperature=0.0)
    with pytest.raises(TailorError, match="bins"):
        ece(logits, labels, bins=0)


def test_per_class_escalation_counts_inputs_past_each_stage() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    answered = torch.tensor([0, 1, 2, 2, 0, 0, 1])
    rates = per_class_escalation(labels, answered, num_classes=4, num_stages=3)
    assert rates.shape == (4, 2)
    assert rates[0].tolist() == [0.75, 0.5]
    assert rates[1].tolist() == [0.0, 0.0]
    assert rates[2].tolist() == [1.0, 0.0]
    assert all(math.isnan(v) for v in rates[3].tolist())  # no inputs of class 3
    with pytest.raises(TailorError, match="stage indices"):
        per_class_escalation(labels, answered + 1, 4, 3)


def test_escalation_by_bins_groups_inputs_by_value() -> None:
    difficulty = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    answered = torch.tensor([0, 0, 1, 1, 0])
    rows = escalation_by_bins(difficulty, answered, [0.0, 0.5, 1.0], num_stages=2)
    assert [r["count"] for r in rows] == [2, 3]  # the last bin includes 1.0
    assert rows[0]["escalated"] == [0.0]
    assert rows[1]["escalated"] == [pytest.approx(2 / 3)]
    with pytest.raises(TailorError, match="increasing"):
        escalation_by_bins(difficulty, answered, [0.5, 0.5], num_stages=2)
