"""WeSAM's losses (paper facts 1.2) against hand values and independent reference formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from configs.base_config import base_config
from losses.anchor import anchor_loss
from losses.contrastive import instance_contrastive_loss, instance_prototypes
from losses.segmentation import dice_loss, focal_loss, iou_head_loss
from losses.wesam_loss import TERMS, loss_branches, wesam_loss


def bce(x: float, t: float) -> float:
    """Binary cross-entropy of one logit, written out: -t log s(x) - (1 - t) log(1 - s(x))."""
    return t * math.log1p(math.exp(-x)) + (1 - t) * math.log1p(math.exp(x))


def reference_dice(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    p, t = torch.sigmoid(logits).flatten(), targets.flatten().float()
    return 1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


# ---------------------------------------------------------------- focal


FOCAL_LOGITS = [[0.0, 2.0], [-1.0, 3.0]]
FOCAL_TARGETS = [[1.0, 0.0], [0.0, 1.0]]


def test_focal_loss_hand_value():
    logits = torch.tensor(FOCAL_LOGITS)[None, None]
    targets = torch.tensor(FOCAL_TARGETS)[None, None]
    alpha, gamma = 0.8, 2.0
    pixels = [(x, t) for row_x, row_t in zip(FOCAL_LOGITS, FOCAL_TARGETS) for x, t in zip(row_x, row_t)]
    expected = sum(alpha * (1 - math.exp(-bce(x, t))) ** gamma * bce(x, t) for x, t in pixels) / len(pixels)
    got = focal_loss(logits, targets, alpha, gamma)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_defaults_are_alpha_08_gamma_2():
    logits = torch.tensor(FOCAL_LOGITS)[None, None]
    targets = torch.tensor(FOCAL_TARGETS)[None, None]
    torch.testing.assert_close(focal_loss(logits, targets), focal_loss(logits, targets, 0.8, 2.0))


def test_focal_loss_with_gamma_zero_is_scaled_bce():
    logits = torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    targets = (torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    expected = 0.5 * F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(focal_loss(logits, targets, alpha=0.5, gamma=0.0), expected)


def test_focal_loss_is_near_zero_for_confident_correct_logits():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None, None]
    logits = (targets * 2 - 1) * 20
    assert 0 <= focal_loss(logits, targets).item() < 1e-8


def test_focal_loss_is_large_for_confident_wrong_logits():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None, None]
    logits = (1 - targets * 2) * 20  # every pixel wrong: p_t ~ 0, focal ~ alpha * BCE ~ 0.8 * 20
    assert focal_loss(logits, targets).item() == pytest.approx(0.8 * 20, rel=1e-3)


def test_focal_loss_is_linear_in_alpha():
    logits = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    targets = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    base = focal_loss(logits, targets, alpha=1.0)
    for alpha in (0.25, 0.8, 3.0):
        torch.testing.assert_close(focal_loss(logits, targets, alpha=alpha), alpha * base)


# ---------------------------------------------------------------- dice


def test_dice_loss_hand_value():
    # p = sigmoid(0) = 0.5 and sigmoid(ln 3) = 0.75; sum(pt) = 0.5, sum(p) = 1.25, sum(t) = 1
    # 1 - (2 * 0.5 + 1) / (1.25 + 1 + 1) = 1 - 2 / 3.25 = 5 / 13
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    targets = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    got = dice_loss(logits, targets, smooth=1.0)
    assert got.shape == ()
    assert got.item() == pytest.approx(5 / 13, rel=1e-6)


def test_dice_loss_default_smooth_is_one():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    targets = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert dice_loss(logits, targets).item() == pytest.approx(5 / 13, rel=1e-6)


def test_dice_loss_is_near_zero_for_perfect_confident_prediction():
    targets = torch.zeros(2, 1, 8, 8)
    targets[0, 0, :4, :4] = 1
    targets[1, 0, 2:, 5:] = 1
    logits = (targets * 2 - 1) * 30
    assert abs(dice_loss(logits, targets).item()) < 1e-6


def test_dice_loss_pools_all_instances_of_the_image():
    """One ratio over the flattened stack of instances, not a mean of per-instance dice."""
    logits = torch.tensor([[3.0, -3.0, 0.5, -0.5], [1.0, 2.0, -2.0, 0.0]]).view(2, 1, 2, 2)
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    pooled = reference_dice(logits, targets)
    per_instance_mean = (reference_dice(logits[:1], targets[:1]) + reference_dice(logits[1:], targets[1:])) / 2
    got = dice_loss(logits, targets)
    torch.testing.assert_close(got, pooled)
    assert not torch.isclose(got, per_instance_mean)
    torch.testing.assert_close(dice_loss(logits, targets, per_instance=True), per_instance_mean)


# ---------------------------------------------------------------- IoU head


def test_iou_head_loss_hand_value_and_gradients():
    # instance 0: prediction equals the target (IoU 1); instance 1: 1 of the target's 2 pixels (IoU 0.5)
    logits = torch.tensor([[[4.0, -4.0], [-4.0, 4.0]], [[4.0, -4.0], [-4.0, -4.0]]])[:, None].requires_grad_()
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]])[:, None]
    iou_pred = torch.tensor([[0.8], [0.1]], requires_grad=True)

    loss = iou_head_loss(iou_pred, logits, targets)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(((0.8 - 1.0) ** 2 + (0.1 - 0.5) ** 2) / 2)  # 0.1

    loss.backward()
    # d/dp mean((p - a)^2) = 2 (p - a) / N
    torch.testing.assert_close(iou_pred.grad, torch.tensor([[-0.2], [-0.4]]))
    assert logits.grad is None or torch.count_nonzero(logits.grad) == 0


def test_iou_head_loss_is_zero_when_prediction_matches_actual_iou():
    logits = torch.tensor([[[4.0, 4.0], [-4.0, -4.0]]])[:, None]
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])[:, None]  # 1 shared, 1 fp, 1 fn -> IoU 1/3
    assert iou_head_loss(torch.tensor([[1 / 3]]), logits, targets).item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- anchor


def test_anchor_loss_is_half_dice_of_each_branch_to_hard_anchor_mask():
    g = torch.Generator().manual_seed(4)
    student = torch.randn(3, 1, 6, 6, generator=g, requires_grad=True)
    teacher = torch.randn(3, 1, 6, 6, generator=g, requires_grad=True)
    anchor = torch.randn(3, 1, 6, 6, generator=g, requires_grad=True)

    hard = (anchor.detach() > 0).float()
    expected = 0.5 * reference_dice(student.detach(), hard) + 0.5 * reference_dice(teacher.detach(), hard)
    loss = anchor_loss(student, teacher, anchor)
    assert loss.shape == ()
    torch.testing.assert_close(loss.detach(), expected)

    loss.backward()
    assert student.grad is not None and torch.count_nonzero(student.grad) > 0
    assert teacher.grad is not None and torch.count_nonzero(teacher.grad) > 0
    assert anchor.grad is None or torch.count_nonzero(anchor.grad) == 0


def test_anchor_loss_uses_hard_anchor_mask_not_probabilities():
    """Scaling the anchor logits keeps their sign, hence the loss."""
    g = torch.Generator().manual_seed(5)
    student, teacher, anchor = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(3))
    torch.testing.assert_close(anchor_loss(student, teacher, anchor), anchor_loss(student, teacher, 7 * anchor))


def test_anchor_loss_smooth_is_passed_to_dice():
    g = torch.Generator().manual_seed(6)
    student, teacher, anchor = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(3))
    hard = (anchor > 0).float()
    expected = 0.5 * reference_dice(student, hard, 3.0) + 0.5 * reference_dice(teacher, hard, 3.0)
    torch.testing.assert_close(anchor_loss(student, teacher, anchor, smooth=3.0), expected)


# ---------------------------------------------------------------- contrastive


def reference_prototypes(embedding: torch.Tensor, masks: torch.Tensor) -> list[list[float]]:
    """Masked average pooling with loops: mean of the per-pixel L2-normalised features in each
    boolean mask (N x h x w); an empty mask gives a zero vector."""
    channels, height, width = embedding.shape
    prototypes = []
    for m in masks:
        total, count = [0.0] * channels, 0
        for r in range(height):
            for c in range(width):
                if m[r, c]:
                    feature = [float(v) for v in embedding[:, r, c]]
                    norm = math.sqrt(sum(v * v for v in feature))
                    total = [t + v / norm for t, v in zip(total, feature)]
                    count += 1
        prototypes.append([t / max(count, 1) for t in total])
    return prototypes


def cosine(a: list[float], b: list[float]) -> float:
    na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
    if na == 0 or nb == 0:
        return 0.0
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def reference_contrastive(embedding_a, embedding_b, masks_a, masks_b, temperature: float) -> float:
    """-log(sum_i exp S_ii / sum_ij exp S_ij), S = cosine(prototypes) / T."""
    pa, pb = reference_prototypes(embedding_a, masks_a), reference_prototypes(embedding_b, masks_b)
    s = [[cosine(a, b) / temperature for b in pb] for a in pa]
    diagonal = sum(math.exp(s[i][i]) for i in range(len(s)))
    everything = sum(math.exp(v) for row in s for v in row)
    return -math.log(diagonal / everything)


def region_logits(regions: list[tuple[slice, slice]], size: int) -> torch.Tensor:
    """N x 1 x size x size logits: +5 inside each instance's region, -5 elsewhere."""
    logits = torch.full((len(regions), 1, size, size), -5.0)
    for n, (rows, cols) in enumerate(regions):
        logits[n, 0, rows, cols] = 5.0
    return logits


REGIONS = [(slice(0, 3), slice(0, 3)), (slice(0, 4), slice(4, 8)), (slice(5, 8), slice(1, 6))]


def test_instance_prototypes_match_loop_reference():
    g = torch.Generator().manual_seed(7)
    embedding = torch.randn(6, 8, 8, generator=g)
    logits = region_logits(REGIONS, 8)
    logits[2, 0, 7, 0] = 5.0  # a non-rectangular mask, so pooling is not a plain box mean
    got = instance_prototypes(embedding, logits)
    assert got.shape == (3, 6)
    expected = torch.tensor(reference_prototypes(embedding, logits[:, 0] > 0))
    torch.testing.assert_close(got, expected)


def test_instance_prototypes_resize_high_res_logits_to_the_embedding():
    """Block-constant 4x logits sample back exactly to the low-res ones under bilinear resizing."""
    g = torch.Generator().manual_seed(8)
    embedding = torch.randn(5, 8, 8, generator=g)
    low = region_logits(REGIONS, 8)
    high = low.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert high.shape == (3, 1, 32, 32)
    torch.testing.assert_close(instance_prototypes(embedding, high), instance_prototypes(embedding, low))


def test_instance_prototypes_empty_mask_is_zero():
    embedding = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(9))
    logits = region_logits(REGIONS[:1], 8)
    logits = torch.cat([logits, torch.full_like(logits, -5.0)])
    prototypes = instance_prototypes(embedding, logits)
    assert torch.count_nonzero(prototypes[0]) > 0
    assert torch.equal(prototypes[1], torch.zeros(4))


@pytest.mark.parametrize("temperature", [0.3, 1.0])
def test_instance_contrastive_loss_matches_loop_reference(temperature):
    g = torch.Generator().manual_seed(10)
    embedding_a = torch.randn(6, 8, 8, generator=g)
    embedding_b = torch.randn(6, 8, 8, generator=g)
    logits_a = region_logits(REGIONS, 8)
    logits_b = region_logits([REGIONS[1], REGIONS[0], (slice(4, 8), slice(0, 8))], 8)

    got = instance_contrastive_loss(embedding_a, embedding_b, logits_a, logits_b, temperature)
    expected = reference_contrastive(embedding_a, embedding_b, logits_a[:, 0] > 0, logits_b[:, 0] > 0, temperature)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_instance_contrastive_loss_default_temperature_is_03():
    g = torch.Generator().manual_seed(11)
    embedding_a, embedding_b = torch.randn(6, 8, 8, generator=g), torch.randn(6, 8, 8, generator=g)
    logits = region_logits(REGIONS, 8)
    torch.testing.assert_close(instance_contrastive_loss(embedding_a, embedding_b, logits, logits),
                               instance_contrastive_loss(embedding_a, embedding_b, logits, logits, 0.3))


def test_instance_contrastive_loss_is_exactly_zero_for_one_instance():
    g = torch.Generator().manual_seed(12)
    embedding_a, embedding_b = torch.randn(6, 8, 8, generator=g), torch.randn(6, 8, 8, generator=g)
    logits = region_logits(REGIONS[:1], 8)
    assert instance_contrastive_loss(embedding_a, embedding_b, logits, logits).item() == 0.0


def orthogonal_scene(order: tuple[int, ...] = (0, 1, 2), channels: int = 4,
                     size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """An embedding whose instance i has feature e_order[i] inside its region; background e_last."""
    embedding = torch.zeros(channels, size, size)
    embedding[channels - 1] = 1.0
    for i, (rows, cols) in enumerate(REGIONS[:len(order)]):
        embedding[:, rows, cols] = 0.0
        embedding[order[i], rows, cols] = 2.0  # the per-pixel normalisation removes the scale
    return embedding, region_logits(REGIONS[:len(order)], size)


def test_instance_contrastive_loss_closed_form_for_orthogonal_agreeing_prototypes():
    # S = I / T, so the loss is -log(N e^(1/T) / (N e^(1/T) + N(N-1))) = log(1 + (N-1) e^(-1/T))
    embedding, logits = orthogonal_scene()
    for temperature in (0.3, 0.5):
        got = instance_contrastive_loss(embedding, embedding.clone(), logits, logits, temperature)
        assert got.item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / temperature)), rel=1e-5)


def test_instance_contrastive_loss_lower_when_branches_agree_than_when_swapped():
    embedding, logits = orthogonal_scene()
    noise = 0.1 * torch.randn(embedding.shape, generator=torch.Generator().manual_seed(13))
    agree = instance_contrastive_loss(embedding + noise, embedding, logits, logits)

    swapped, _ = orthogonal_scene(order=(1, 0, 2))  # instances 0 and 1 exchange features
    disagree = instance_contrastive_loss(embedding + noise, swapped, logits, logits)
    assert agree.item() < disagree.item()


def test_instance_contrastive_loss_gradient_reaches_embeddings_not_masks():
    g = torch.Generator().manual_seed(14)
    embedding_a = torch.randn(6, 8, 8, generator=g, requires_grad=True)
    embedding_b = torch.randn(6, 8, 8, generator=g, requires_grad=True)
    logits_a = region_logits(REGIONS, 8).requires_grad_()
    logits_b = region_logits(REGIONS, 8).requires_grad_()

    instance_contrastive_loss(embedding_a, embedding_b, logits_a, logits_b).backward()
    for embedding in (embedding_a, embedding_b):
        assert embedding.grad is not None and torch.isfinite(embedding.grad).all()
        assert torch.count_nonzero(embedding.grad) > 0
    for logits in (logits_a, logits_b):
        assert logits.grad is None or torch.count_nonzero(logits.grad) == 0


def test_instance_contrastive_loss_empty_mask_is_finite_with_finite_gradient():
    g = torch.Generator().manual_seed(15)
    embedding_a = torch.randn(6, 8, 8, generator=g, requires_grad=True)
    embedding_b = torch.randn(6, 8, 8, generator=g, requires_grad=True)
    logits = region_logits(REGIONS, 8)
    logits[1] = -5.0

    loss = instance_contrastive_loss(embedding_a, embedding_b, logits, logits)
    expected = reference_contrastive(embedding_a.detach(), embedding_b.detach(), logits[:, 0] > 0,
                                     logits[:, 0] > 0, 0.3)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(embedding_a.grad).all() and torch.isfinite(embedding_b.grad).all()


def test_instance_contrastive_loss_all_masks_empty_is_log_n():
    # every prototype is zero, so S = 0 and the loss is log(N^2) - log(N)
    g = torch.Generator().manual_seed(16)
    embedding_a, embedding_b = torch.randn(6, 8, 8, generator=g), torch.randn(6, 8, 8, generator=g)
    logits = torch.full((3, 1, 8, 8), -5.0)
    assert instance_contrastive_loss(embedding_a, embedding_b, logits, logits).item() == pytest.approx(math.log(3))


# ---------------------------------------------------------------- wesam_loss

CHANNELS, EMBED, LOW, IMAGE = 6, 4, 16, 32  # embedding h = w = 4, logits 4h, input canvas S
WEIGHTS = dict(base_config["loss"])


def fake_outputs(counts: list[int], seed: int = 0) -> dict[str, dict]:
    """Anchor, teacher and student Outputs of len(counts) images with counts[i] instances each,
    every tensor a leaf that requires grad."""
    g = torch.Generator().manual_seed(seed)
    outputs = {}
    for branch in ("anchor", "teacher", "student"):
        outputs[branch] = {
            "embeddings": torch.randn(len(counts), CHANNELS, EMBED, EMBED, generator=g).requires_grad_(),
            "logits": [torch.randn(n, 1, LOW, LOW, generator=g).requires_grad_() for n in counts],
            "iou": [torch.rand(n, 1, generator=g).requires_grad_() for n in counts],
        }
    return outputs


def upscale(logits: torch.Tensor) -> torch.Tensor:
    return F.interpolate(logits, (IMAGE, IMAGE), mode="bilinear", align_corners=False)


def reference_terms(outputs: dict[str, dict], mode: str) -> dict[str, float]:
    """The terms of facts 1.2, averaged over the images that have instances."""
    student, teacher, anchor = outputs["student"], outputs["teacher"], outputs["anchor"]
    regularised = teacher if mode == "shared" else student
    sums = dict.fromkeys(TERMS, 0.0)
    images = 0
    num_masks = float(sum(len(logits) for logits in student["logits"]))  # the authors' focal alpha and dice smooth
    with torch.no_grad():
        for i, logits in enumerate(student["logits"]):
            if len(logits) == 0:
                continue
            images += 1
            s, t, a = upscale(logits), upscale(teacher["logits"][i]), upscale(anchor["logits"][i])
            pseudo, hard_anchor = (t > 0).float(), (a > 0).float()
            sums["focal"] += focal_loss(s, pseudo, num_masks, WEIGHTS["focal_gamma"]).item()
            sums["dice"] += reference_dice(s, pseudo, num_masks).item()
            iou = [float(((p > 0) & (q > 0)).sum() / ((p > 0) | (q > 0)).sum()) for p, q in zip(s, pseudo)]
            sums["iou"] += float(((student["iou"][i].flatten() - torch.tensor(iou)) ** 2).mean())
            r = t if mode == "shared" else s
            sums["anchor"] += 0.5 * reference_dice(s, hard_anchor).item() + 0.5 * reference_dice(r, hard_anchor).item()
            sums["contrastive"] += reference_contrastive(
                regularised["embeddings"][i], anchor["embeddings"][i],
                F.interpolate(regularised["logits"][i], (EMBED, EMBED), mode="bilinear")[:, 0] > 0,
                F.interpolate(anchor["logits"][i], (EMBED, EMBED), mode="bilinear")[:, 0] > 0,
                WEIGHTS["temperature"])
    return {name: value / max(images, 1) for name, value in sums.items()}


@pytest.mark.parametrize("mode", ["shared", "ema"])
def test_wesam_loss_terms_match_reference(mode):
    outputs = fake_outputs([3, 2])
    total, terms = wesam_loss(outputs, WEIGHTS, mode, IMAGE)
    assert tuple(terms) == TERMS == ("focal", "dice", "iou", "anchor", "contrastive")
    expected = reference_terms(outputs, mode)
    for name in TERMS:
        assert terms[name].shape == ()
        assert terms[name].item() == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    assert terms["contrastive"].item() > 0  # N >= 2, so the term is active


def test_wesam_loss_total_is_weighted_sum_with_base_config_weights():
    assert {name: WEIGHTS[name] for name in TERMS} == {"focal": 20.0, "dice": 1.0, "iou": 1.0, "anchor": 1.0,
                                                       "contrastive": 1.0}
    total, terms = wesam_loss(fake_outputs([3, 2]), WEIGHTS, "shared", IMAGE)
    assert total.shape == ()
    expected = 20 * terms["focal"] + terms["dice"] + terms["iou"] + terms["anchor"] + terms["contrastive"]
    torch.testing.assert_close(total, expected)


def test_wesam_loss_total_follows_custom_weights():
    weights = dict(WEIGHTS, focal=2.0, dice=3.0, iou=5.0, anchor=7.0, contrastive=11.0)
    total, terms = wesam_loss(fake_outputs([2, 4]), weights, "shared", IMAGE)
    expected = sum(weights[name] * terms[name].item() for name in TERMS)
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_wesam_loss_ema_anchor_term_is_student_dice_to_anchor():
    """In ema mode both halves of the anchor term are the student's dice."""
    outputs = fake_outputs([3])
    _, terms = wesam_loss(outputs, WEIGHTS, "ema", IMAGE)
    s, a = upscale(outputs["student"]["logits"][0]), upscale(outputs["anchor"]["logits"][0])
    expected = reference_dice(s.detach(), (a.detach() > 0).float())
    assert terms["anchor"].item() == pytest.approx(expected.item(), rel=1e-5)


def grad_is_nonzero(tensor: torch.Tensor) -> bool:
    return tensor.grad is not None and bool(torch.count_nonzero(tensor.grad) > 0)


@pytest.mark.parametrize("mode", ["shared", "ema"])
def test_wesam_loss_self_training_terms_never_reach_the_teacher(mode):
    outputs = fake_outputs([3, 2])
    _, terms = wesam_loss(outputs, WEIGHTS, mode, IMAGE)
    (terms["focal"] + terms["dice"] + terms["iou"]).backward()
    teacher, student = outputs["teacher"], outputs["student"]
    assert teacher["embeddings"].grad is None
    assert all(t.grad is None for t in teacher["logits"])
    assert all(grad_is_nonzero(t) for t in student["logits"])
    assert all(grad_is_nonzero(t) for t in student["iou"])


def test_wesam_loss_shared_mode_regularises_the_teacher():
    outputs = fake_outputs([3, 2])
    _, terms = wesam_loss(outputs, WEIGHTS, "shared", IMAGE)
    (terms["anchor"] + terms["contrastive"]).backward()
    teacher, student = outputs["teacher"], outputs["student"]
    assert all(grad_is_nonzero(t) for t in teacher["logits"])  # anchor term
    assert grad_is_nonzero(teacher["embeddings"])  # contrastive term
    assert all(grad_is_nonzero(t) for t in student["logits"])  # the student half of the anchor term
    assert student["embeddings"].grad is None


def test_wesam_loss_ema_mode_regularises_the_student_only():
    outputs = fake_outputs([3, 2])
    _, terms = wesam_loss(outputs, WEIGHTS, "ema", IMAGE)
    (terms["anchor"] + terms["contrastive"]).backward()
    teacher, student = outputs["teacher"], outputs["student"]
    assert teacher["embeddings"].grad is None
    assert all(t.grad is None for t in teacher["logits"])
    assert all(grad_is_nonzero(t) for t in student["logits"])
    assert grad_is_nonzero(student["embeddings"])


@pytest.mark.parametrize("mode", ["shared", "ema"])
def test_wesam_loss_anchor_logits_get_no_gradient(mode):
    outputs = fake_outputs([3, 2])
    total, _ = wesam_loss(outputs, WEIGHTS, mode, IMAGE)
    total.backward()
    assert all(t.grad is None for t in outputs["anchor"]["logits"])


@pytest.mark.parametrize("mode", ["shared", "ema"])
def test_wesam_loss_skips_images_without_instances(mode):
    with_empty = fake_outputs([3, 0, 2], seed=1)
    without = {
        branch: {"embeddings": out["embeddings"].detach()[[0, 2]],
                 "logits": [out["logits"][0].detach(), out["logits"][2].detach()],
                 "iou": [out["iou"][0].detach(), out["iou"][2].detach()]}
        for branch, out in with_empty.items()
    }
    total_empty, terms_empty = wesam_loss(with_empty, WEIGHTS, mode, IMAGE)
    total, terms = wesam_loss(without, WEIGHTS, mode, IMAGE)
    for name in TERMS:
        torch.testing.assert_close(terms_empty[name].detach(), terms[name], msg=name)
    torch.testing.assert_close(total_empty.detach(), total)


def test_wesam_loss_batch_average_is_mean_of_single_image_losses():
    weights = dict(WEIGHTS, num_masks_as_alpha=False)  # with it, alpha counts the whole batch's masks
    outputs = fake_outputs([3, 2], seed=2)
    _, terms = wesam_loss(outputs, weights, "shared", IMAGE)
    singles = []
    for i in range(2):
        single = {branch: {"embeddings": out["embeddings"][i:i + 1], "logits": [out["logits"][i]],
                           "iou": [out["iou"][i]]} for branch, out in outputs.items()}
        singles.append(wesam_loss(single, weights, "shared", IMAGE)[1])
    for name in TERMS:
        torch.testing.assert_close(terms[name], (singles[0][name] + singles[1][name]) / 2, msg=name)


def test_num_masks_as_alpha_sets_focal_alpha_and_dice_smooth_to_the_batch_instance_count():
    assert WEIGHTS["num_masks_as_alpha"]  # the authors' effective loss is the default
    outputs = fake_outputs([3, 2], seed=2)
    _, slipped = wesam_loss(outputs, WEIGHTS, "shared", IMAGE)
    _, five = wesam_loss(outputs, dict(WEIGHTS, num_masks_as_alpha=False, focal_alpha=5.0, dice_smooth=5.0),
                         "shared", IMAGE)
    _, fixed = wesam_loss(outputs, dict(WEIGHTS, num_masks_as_alpha=False), "shared", IMAGE)
    for name in ("focal", "dice", "iou", "contrastive"):
        torch.testing.assert_close(slipped[name], five[name], msg=name)
    torch.testing.assert_close(slipped["anchor"], fixed["anchor"])  # the anchor dice keeps smooth 1, as theirs
    assert slipped["focal"].item() == pytest.approx(fixed["focal"].item() * 5 / WEIGHTS["focal_alpha"], rel=1e-5)
    assert slipped["dice"].item() != pytest.approx(fixed["dice"].item(), rel=1e-3)


def test_wesam_loss_batch_without_instances_is_zero():
    total, terms = wesam_loss(fake_outputs([0, 0]), WEIGHTS, "shared", IMAGE)
    assert total.item() == 0.0
    assert all(terms[name].item() == 0.0 for name in TERMS)


def test_supervised_target_uses_ground_truth_and_needs_only_the_student():
    weights = dict(WEIGHTS, target="ground_truth")
    outputs = fake_outputs([3, 2], seed=4)
    g = torch.Generator().manual_seed(9)
    masks = [torch.rand(n, IMAGE, IMAGE, generator=g) > 0.5 for n in (3, 2)]
    total, terms = wesam_loss({"student": outputs["student"]}, weights, "shared", IMAGE, masks)
    expected = {name: 0.0 for name in TERMS}
    for logits, iou, gt in zip(outputs["student"]["logits"], outputs["student"]["iou"], masks):
        s, t = upscale(logits), gt[:, None].float()
        expected["focal"] += focal_loss(s, t, 5.0, WEIGHTS["focal_gamma"]).item() / 2  # 5 masks in the batch
        expected["dice"] += dice_loss(s, t, 5.0).item() / 2
        expected["iou"] += iou_head_loss(iou, s, t).item() / 2
    for name in TERMS:
        assert terms[name].item() == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name
    assert total.item() == pytest.approx(20 * expected["focal"] + expected["dice"] + expected["iou"], rel=1e-5)
    total.backward()
    assert outputs["student"]["logits"][0].grad.abs().sum() > 0
    _, with_all_branches = wesam_loss(outputs, weights, "shared", IMAGE, masks)  # anchor and teacher unused
    for name in TERMS:
        torch.testing.assert_close(with_all_branches[name], terms[name], msg=name)
    assert "pseudo_label_iou" not in with_all_branches  # the target is the truth: nothing to diagnose
    with pytest.raises(ValueError, match="no ground-truth masks"):
        wesam_loss({"student": outputs["student"]}, weights, "shared", IMAGE)


@pytest.mark.parametrize("mode", ["shared", "ema"])
def test_pseudo_label_iou_is_the_teacher_hard_mask_miou_and_not_in_the_loss(mode):
    outputs = fake_outputs([3, 2], seed=5)
    g = torch.Generator().manual_seed(2)
    masks = [torch.rand(n, IMAGE, IMAGE, generator=g) > 0.5 for n in (3, 2)]
    masks[1] = upscale(outputs["teacher"]["logits"][1].detach())[:, 0] > 0  # the teacher is exactly right here
    total, terms = wesam_loss(outputs, WEIGHTS, mode, IMAGE, masks)
    per_image = []
    for logits, gt in zip(outputs["teacher"]["logits"], masks):
        pseudo = upscale(logits.detach())[:, 0] > 0
        per_image.append(float(((pseudo & gt).sum((1, 2)) / (pseudo | gt).sum((1, 2))).mean()))
    assert per_image[1] == 1.0 and per_image[0] < 0.6
    assert terms["pseudo_label_iou"].item() == pytest.approx(sum(per_image) / 2, rel=1e-6)
    assert not terms["pseudo_label_iou"].requires_grad
    total_without, terms_without = wesam_loss(outputs, WEIGHTS, mode, IMAGE)
    assert "pseudo_label_iou" not in terms_without
    torch.testing.assert_close(total, total_without)


def test_loss_branches_skip_what_the_weights_do_not_use():
    assert loss_branches(WEIGHTS) == ("anchor", "teacher", "student")
    assert loss_branches(dict(WEIGHTS, anchor=0.0, contrastive=0.0)) == ("teacher", "student")
    assert loss_branches(dict(WEIGHTS, anchor=0.0)) == ("anchor", "teacher", "student")
    assert loss_branches(dict(WEIGHTS, target="ground_truth")) == ("student",)


def test_self_training_without_anchor_branch_has_zero_regularisers():
    outputs = fake_outputs([3, 2], seed=6)
    _, full = wesam_loss(outputs, WEIGHTS, "shared", IMAGE)
    _, plain = wesam_loss({"teacher": outputs["teacher"], "student": outputs["student"]}, WEIGHTS, "shared", IMAGE)
    assert plain["anchor"].item() == 0.0 and plain["contrastive"].item() == 0.0
    for name in ("focal", "dice", "iou"):
        torch.testing.assert_close(plain[name], full[name])


# ---------------------------------------------------------------- the authors' code versions and quirks


def test_focal_loss_on_the_mean_bce_is_the_first_release_formula():
    logits, targets = torch.tensor(FOCAL_LOGITS), torch.tensor(FOCAL_TARGETS)
    mean_bce = sum(bce(x, t) for row_x, row_t in zip(FOCAL_LOGITS, FOCAL_TARGETS) for x, t in zip(row_x, row_t)) / 4
    expected = 0.8 * (1 - math.exp(-mean_bce)) ** 2 * mean_bce
    assert focal_loss(logits, targets, on="mean").item() == pytest.approx(expected, rel=1e-6)
    assert focal_loss(logits, targets, on="mean").item() != pytest.approx(focal_loss(logits, targets).item(), rel=1e-3)


def test_focal_bce_from_probabilities_caps_a_confidently_wrong_pixel_at_100_without_gradient():
    # In float32, 1 - sigmoid(x) is exactly 0 beyond x = 16.6, and torch caps log(0) at -100.
    logits = torch.tensor([[40.0, 1.5]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0]])
    exact = focal_loss(logits, targets, alpha=1.0, gamma=0.0, bce="logits")
    authors = focal_loss(logits, targets, alpha=1.0, gamma=0.0, bce="probabilities")
    assert exact.item() == pytest.approx((bce(40.0, 0.0) + bce(1.5, 0.0)) / 2, rel=1e-5)
    assert authors.item() == pytest.approx((100.0 + bce(1.5, 0.0)) / 2, rel=1e-5)
    authors.backward()
    assert logits.grad[0, 0] == 0 and logits.grad[0, 1] > 0
    # away from saturation both are the same BCE
    moderate = torch.tensor([[0.3, -2.0]])
    torch.testing.assert_close(focal_loss(moderate, targets, bce="probabilities"), focal_loss(moderate, targets))


def test_instance_prototypes_raw_logits_are_signed_weights():
    g = torch.Generator().manual_seed(11)
    embedding = torch.randn(6, 8, 8, generator=g)
    logits = torch.randn(2, 1, 8, 8, generator=g)
    features = F.normalize(embedding.flatten(1), dim=0)
    weights = logits.flatten(1)
    expected = torch.stack([(w[None] * features).sum(1) / w.sum() for w in weights])
    torch.testing.assert_close(instance_prototypes(embedding, logits, masks="raw"), expected)
    loss = instance_contrastive_loss(embedding, embedding.flip(0), logits, logits, masks="raw")
    assert torch.isfinite(loss) and loss > 0


def test_iou_head_target_of_two_empty_masks_is_one_here_and_zero_in_the_authors_code():
    logits = torch.full((1, 1, 4, 4), -3.0)
    targets = torch.zeros(1, 1, 4, 4)
    pred = torch.tensor([[0.25]])
    assert iou_head_loss(pred, logits, targets).item() == pytest.approx(0.75 ** 2)
    assert iou_head_loss(pred, logits, targets, threshold=0.5, empty=0.0).item() == pytest.approx(0.25 ** 2)


def test_iou_head_threshold_05_leaves_out_logits_between_0_and_05():
    logits = torch.tensor([[[[0.3, 2.0], [2.0, -1.0]]]])
    targets = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    zero = torch.tensor([[0.0]])
    assert iou_head_loss(zero, logits, targets).item() == pytest.approx(1.0)
    assert iou_head_loss(zero, logits, targets, threshold=0.5).item() == pytest.approx((2 / 3) ** 2)


def test_wesam_loss_reads_every_code_version_option():
    outputs = fake_outputs([3, 2])
    _, base = wesam_loss(outputs, WEIGHTS, "shared", IMAGE)
    for key, value in [("focal_on", "mean"), ("focal_bce", "probabilities"), ("contrastive_masks", "raw"),
                       ("iou_threshold", 0.5), ("iou_empty", 0.0)]:
        _, changed = wesam_loss(outputs, dict(WEIGHTS, **{key: value}), "shared", IMAGE)
        assert set(changed) == set(base)
        assert all(torch.isfinite(v) for v in changed.values())
