"""OFDLoss (partial L2) against a hand computation."""
import pytest
import torch

from mmkd.models import OFDLoss


def test_ofd_loss_matches_a_hand_computation_over_the_four_sign_cases():
    # (S, T): T > 0 with S above / below it, T < 0 with S above it, S <= T <= 0 (skipped)
    pairs = [(2.0, 1.0), (-1.0, 3.0), (0.5, -2.0), (-3.0, -1.0), (-1.0, 0.0), (-0.2, -0.5)]
    student = torch.tensor([s for s, _ in pairs]).reshape(2, 3, 1, 1).requires_grad_()
    teacher = torch.tensor([t for _, t in pairs]).reshape(2, 3, 1, 1)
    # 1^2 + 4^2 + 2.5^2 + 0 + 0 + 0.3^2 = 23.34, / batch 2 / divisor 1000 * weight 0.5
    loss = OFDLoss(loss_weight=0.5, divisor=1000)(student, teacher)
    assert loss.item() == pytest.approx(0.5 * 23.34 / (2 * 1000))
    loss.backward()
    assert student.grad.flatten()[[3, 4]].tolist() == [0.0, 0.0]
    assert (student.grad.flatten()[[0, 1, 2, 5]] != 0).all()
    with pytest.raises(ValueError, match='divisor'):
        OFDLoss(divisor=0)
