"""The training maths written from scratch (training/loss, optimizer, schedule, clipping), each
checked against PyTorch's own implementation on the same inputs."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama_from_scratch.model.config import PRESETS
from llama_from_scratch.model.parameters import count_parameters
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.training.clipping import clip_grad_norm
from llama_from_scratch.training.loss import cross_entropy
from llama_from_scratch.training.optimizer import AdamW, param_groups
from llama_from_scratch.training.schedule import lr_at

LLAMA2 = dict(betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs() / b.double().abs()).item()


# --- cross-entropy ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 50), (3, 16, 512), (2, 3, 4, 100)])
def test_cross_entropy_equals_pytorch_in_float32(shape):
    g = torch.Generator().manual_seed(len(shape))
    logits = 3 * torch.randn(shape, generator=g)
    targets = torch.randint(0, shape[-1], shape[:-1], generator=g)
    ours = cross_entropy(logits, targets)
    expected = F.cross_entropy(logits.reshape(-1, shape[-1]), targets.reshape(-1))
    assert ours.shape == () and ours.dtype == torch.float32
    assert relative_error(ours, expected) < 1e-6, (ours.item(), expected.item())


def test_cross_entropy_of_bfloat16_logits_is_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(4, 16, 512, generator=g)).bfloat16()
    targets = torch.randint(0, 512, (4, 16), generator=g)
    ours = cross_entropy(logits, targets)
    in_float32 = F.cross_entropy(logits.float().reshape(-1, 512), targets.reshape(-1))
    in_bfloat16 = F.cross_entropy(logits.reshape(-1, 512), targets.reshape(-1))  # bfloat16 result
    assert ours.dtype == torch.float32
    assert relative_error(ours, in_float32) < 1e-6
    # PyTorch on bfloat16 logits hands back a bfloat16 loss: ~3 significant digits.
    assert in_bfloat16.dtype == torch.bfloat16 and relative_error(in_bfloat16.float(), in_float32) > 1e-4


@pytest.mark.parametrize("scale", [1e4, 1e6])
def test_cross_entropy_is_stable_where_the_naive_formula_overflows(scale):
    g = torch.Generator().manual_seed(2)
    logits = scale * torch.randn(8, 64, generator=g)
    targets = torch.randint(0, 64, (8,), generator=g)
    ours = cross_entropy(logits, targets)
    expected = F.cross_entropy(logits, targets)
    assert torch.isfinite(ours) and relative_error(ours, expected) < 1e-6
    # The textbook version, softmax then log: exp(1e4) is inf in float32, inf / inf is nan.
    naive_probs = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    naive = -torch.log(naive_probs.gather(-1, targets[:, None])).mean()
    assert not torch.isfinite(naive)


def test_cross_entropy_gradient_equals_pytorch():
    g = torch.Generator().manual_seed(3)
    logits = (2 * torch.randn(4, 12, 300, generator=g)).requires_grad_()
    targets = torch.randint(0, 300, (4, 12), generator=g)
    targets[0, :5] = -100
    cross_entropy(logits, targets).backward()
    ours = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits.reshape(-1, 300), targets.reshape(-1)).backward()
    torch.testing.assert_close(ours, logits.grad, atol=1e-9, rtol=1e-6)
    assert ours[0, :5].abs().max() == 0  # ignored positions get no gradient


def test_cross_entropy_ignore_index_is_left_out_of_the_mean():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 10, 40, generator=g)
    targets = torch.randint(0, 40, (3, 10), generator=g)
    targets[:, :4] = -100  # a masked prompt
    expected = F.cross_entropy(logits.reshape(-1, 40), targets.reshape(-1), ignore_index=-100)
    assert relative_error(cross_entropy(logits, targets), expected) < 1e-6
    by_hand = cross_entropy(logits[:, 4:], targets[:, 4:])  # the same positions, nothing ignored
    assert relative_error(cross_entropy(logits, targets), by_hand) < 1e-6
    changed = logits.clone()
    changed[:, :4] = 100 * torch.randn(3, 4, 40, generator=g)  # ignored positions do not matter
    assert cross_entropy(changed, targets) == cross_entropy(logits, targets)
    sevens = targets.masked_fill(targets == -100, 7)  # another ignore_index
    assert relative_error(cross_entropy(logits, sevens, ignore_index=7),
                          F.cross_entropy(logits.reshape(-1, 40), sevens.reshape(-1), ignore_index=7)) < 1e-6


def test_cross_entropy_bad_input_says_what_is_wrong():
    logits = torch.randn(2, 5, 10)
    with pytest.raises(ValueError, match="every one of the 10 targets is ignore_index"):
        cross_entropy(logits, torch.full((2, 5), -100))
    with pytest.raises(ValueError, match=r"need targets \(2, 5\)"):
        cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cross_entropy(logits, torch.full((2, 5), 10))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cross_entropy(logits, torch.full((2, 5), -1))
    with pytest.raises(ValueError, match="integer token ids"):
        cross_entropy(logits, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="floating point"):
        cross_entropy(logits.long(), torch.zeros(2, 5, dtype=torch.long))


# --- AdamW ------------------------------------------------------------------------------------

def tiny_pair(tie: bool = False) -> tuple[Transformer, Transformer]:
    torch.manual_seed(0)
    args = replace(PRESETS["tiny"], tie_embeddings=tie)
    a, b = Transformer(args), Transformer(args)
    b.load_state_dict(a.state_dict())
    return a, b


def train_step(model: Transformer, optimizer: torch.optim.Optimizer, tokens: torch.Tensor, lr: float,
               drop_grad: str | None = None) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    cross_entropy(model(tokens[:, :-1]), tokens[:, 1:]).backward()
    if drop_grad is not None:  # a parameter without a gradient this step: skipped by both
        model.get_parameter(drop_grad).grad = None
    optimizer.step()


def test_adamw_equals_torch_every_step_for_100_steps():
    ours_model, torch_model = tiny_pair()
    ours = AdamW(param_groups(ours_model, 0.1), lr=1e-3, **LLAMA2)
    reference = torch.optim.AdamW(param_groups(torch_model, 0.1), lr=1e-3, foreach=False, fused=False,
                                  **LLAMA2)
    assert [g["weight_decay"] for g in ours.param_groups] == [0.1, 0.0]
    g = torch.Generator().manual_seed(5)
    for step in range(100):
        tokens = torch.randint(0, 512, (4, 33), generator=g)
        lr = lr_at(step, 3e-3, 10, 100)
        drop = "layers.1.ffn_norm.weight" if step % 7 == 3 else None
        train_step(ours_model, ours, tokens, lr, drop)
        train_step(torch_model, reference, tokens, lr, drop)
        for (name, p), q in zip(ours_model.named_parameters(), torch_model.parameters()):
            assert (p - q).abs().max() <= 1e-6 * q.abs().max(), f"step {step}: {name} differs"
            assert torch.equal(p, q), f"step {step}: {name} is close but not bitwise equal"
    # The optimizer state too, including the step count of the parameter that skipped steps.
    for p, q in zip(ours_model.parameters(), torch_model.parameters()):
        s, r = ours.state[p], reference.state[q]
        assert torch.equal(s["exp_avg"], r["exp_avg"]) and torch.equal(s["exp_avg_sq"], r["exp_avg_sq"])
        assert s["step"] == int(r["step"])
    assert ours.state[ours_model.get_parameter("layers.1.ffn_norm.weight")]["step"] == 100 - 14
    assert not torch.equal(ours_model.output.weight, tiny_pair()[0].output.weight)  # it trained


def test_adamw_state_dict_round_trip_continues_bitwise():
    model, _ = tiny_pair()
    optimizer = AdamW(param_groups(model, 0.1), **LLAMA2)
    g = torch.Generator().manual_seed(6)
    batches = [torch.randint(0, 512, (2, 17), generator=g) for _ in range(20)]
    for step in range(10):
        train_step(model, optimizer, batches[step], lr_at(step, 1e-3, 5, 20))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    for step in range(10, 20):
        train_step(model, optimizer, batches[step], lr_at(step, 1e-3, 5, 20))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed, _ = tiny_pair()
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = AdamW(param_groups(resumed, 0.1), **LLAMA2)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    for step in range(10, 20):
        train_step(resumed, resumed_optimizer, batches[step], lr_at(step, 1e-3, 5, 20))
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), f"{name} differs after resuming"


def test_adamw_weight_decay_is_decoupled():
    """With zero gradients m and v stay 0, so the only change is p *= (1 - lr * wd), every step;
    Adam with L2 decay (decay added to the gradient) instead moves every weight by about lr."""
    lr, wd = 1e-2, 0.1
    torch.manual_seed(7)
    decayed, kept = nn.Parameter(torch.randn(8, 8)), nn.Parameter(torch.randn(8))
    l2 = nn.Parameter(decayed.detach().clone())
    optimizer = AdamW([{"params": [decayed], "weight_decay": wd}, {"params": [kept], "weight_decay": 0.0}], lr=lr)
    adam_l2 = torch.optim.Adam([l2], lr=lr, betas=(0.9, 0.95), eps=1e-5, weight_decay=wd)
    expected, start_kept = decayed.detach().clone(), kept.detach().clone()
    for _ in range(5):
        for p in (decayed, kept, l2):
            p.grad = torch.zeros_like(p)
        optimizer.step()
        adam_l2.step()
        expected.mul_(1 - lr * wd)
    assert torch.equal(decayed, expected)
    assert torch.equal(kept, start_kept)
    # L2-in-the-gradient Adam is a different method: it normalises wd * p and moves ~lr a step.
    assert (l2 - expected).abs().mean() > 2 * lr


def test_adamw_rejects_impossible_settings():
    p = [nn.Parameter(torch.zeros(2))]
    for bad, match in [(dict(lr=-1.0), "lr"), (dict(betas=(0.9, 1.0)), "betas"), (dict(eps=0.0), "eps"),
                       (dict(weight_decay=-0.1), "weight_decay")]:
        with pytest.raises(ValueError, match=match):
            AdamW(p, **bad)


# --- param_groups -----------------------------------------------------------------------------

MATRICES = {f"layers.{i}.{m}.weight" for i in range(2) for m in
            ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
             "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")}
NORMS = {f"layers.{i}.{n}.weight" for i in range(2) for n in ("attention_norm", "ffn_norm")} | {"norm.weight"}


@pytest.mark.parametrize("tie", [False, True])
def test_param_groups_decay_matrices_only_and_list_every_parameter_once(tie):
    model, _ = tiny_pair(tie)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    output = set() if tie else {"output.weight"}  # tied: output.weight IS tok_embeddings.weight
    assert set(decay["param_names"]) == MATRICES | output
    assert set(no_decay["param_names"]) == NORMS | {"tok_embeddings.weight"}
    ids = [id(p) for group in (decay, no_decay) for p in group["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert sum(p.numel() for group in (decay, no_decay) for p in group["params"]) == \
        count_parameters(model.args)
    for group in (decay, no_decay):
        assert [model.get_parameter(n) is p for n, p in zip(group["param_names"], group["params"])] == \
            [True] * len(group["params"])


def test_param_groups_biases_embeddings_and_frozen_parameters():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3, bias=False))
    model[3].weight.requires_grad_(False)  # frozen: not given to the optimizer at all
    decay, no_decay = param_groups(model, 0.1)
    assert decay["param_names"] == ["1.weight"]
    assert no_decay["param_names"] == ["0.weight", "1.bias", "2.weight", "2.bias"]
    only_vectors = param_groups(nn.LayerNorm(4), 0.1)  # an empty group is left out
    assert [g["weight_decay"] for g in only_vectors] == [0.0]


# --- schedule ---------------------------------------------------------------------------------

def closed_form(step: int, max_lr: float, warmup: int, total: int, ratio: float = 0.1) -> float:
    if step < warmup:
        return max_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return ratio * max_lr + (1 - ratio) * max_lr * (1 + math.cos(math.pi * progress)) / 2


def test_lr_at_landmarks():
    max_lr, warmup, total = 3e-4, 100, 1100
    assert lr_at(0, max_lr, warmup, total) == max_lr / warmup
    assert lr_at(warmup - 1, max_lr, warmup, total) == max_lr  # warmup ends at the peak
    assert lr_at(warmup, max_lr, warmup, total) == max_lr  # and the cosine starts there
    assert lr_at(600, max_lr, warmup, total) == pytest.approx(0.55 * max_lr, rel=1e-12)  # (max + min) / 2
    assert lr_at(total, max_lr, warmup, total) == pytest.approx(0.1 * max_lr, rel=1e-12)
    assert lr_at(total + 5000, max_lr, warmup, total) == pytest.approx(0.1 * max_lr, rel=1e-12)
    assert lr_at(5, 1.0, 0, 10, final_ratio=0.0) == pytest.approx(0.5, rel=1e-12)
    assert lr_at(0, 1.0, 0, 10) == 1.0  # no warmup
    assert lr_at(3, 1.0, 3, 3) == pytest.approx(0.1)  # no decay phase: straight to the floor


def test_lr_at_is_monotone_and_equals_the_closed_form():
    max_lr, warmup, total = 1e-3, 20, 200
    lrs = [lr_at(s, max_lr, warmup, total) for s in range(total + 50)]
    assert all(a < b for a, b in zip(lrs[:warmup - 1], lrs[1:warmup]))
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert min(lrs[warmup:]) == pytest.approx(0.1 * max_lr, rel=1e-12)
    for s, lr in enumerate(lrs):
        assert lr == pytest.approx(closed_form(s, max_lr, warmup, total), rel=1e-12, abs=0)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("warmup,total", [(10, 100), (2, 37), (50, 51)])
def test_lr_at_equals_torch_linear_then_cosine_schedulers(warmup, total):
    """LinearLR from 1/warmup to 1 over warmup - 1 steps (so step s gets (s + 1) / warmup), then
    CosineAnnealingLR over total - warmup steps down to eta_min = 0.1 * max_lr, through SequentialLR.
    Equal for steps 0 .. total; beyond, torch's cosine is periodic and climbs back, ours stays at 10%."""
    max_lr = 1e-3
    p = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=max_lr)
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0,
                                             total_iters=warmup - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=0.1 * max_lr)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup])
    for step in range(total + 4):
        theirs = optimizer.param_groups[0]["lr"]
        if step <= total:
            assert abs(lr_at(step, max_lr, warmup, total) - theirs) < 1e-12, step
        elif step == total + 1:
            assert theirs > lr_at(step, max_lr, warmup, total)
        optimizer.step()
        scheduler.step()


def test_lr_at_rejects_impossible_settings():
    for args, match in [((-1, 1e-3, 10, 100), "step"), ((0, -1.0, 10, 100), "max_lr"),
                        ((0, 1e-3, 10, 5), "warmup_steps"), ((0, 1e-3, -1, 5), "warmup_steps")]:
        with pytest.raises(ValueError, match=match):
            lr_at(*args)
    with pytest.raises(ValueError, match="final_ratio"):
        lr_at(0, 1e-3, 10, 100, final_ratio=1.5)


# --- clipping ---------------------------------------------------------------------------------

def params_with_grads(scale: float, seed: int) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.zeros(shape)) for shape in [(30, 20), (20,), (5, 7, 3), (11,), (64, 64)]]
    for i, p in enumerate(params):
        if i != 3:  # one parameter without a gradient: ignored by both
            p.grad = scale * torch.randn(p.shape, generator=g)
    return params


@pytest.mark.parametrize("scale,max_norm,clips", [
    (1.0, 1.0, True), (100.0, 0.5, True),
    (1e-3, 0.01, True),  # a small norm: the + 1e-6 in max_norm / (norm + 1e-6) shows
    (1e-3, 1.0, False), (0.01, 2.0, False),
    (0.01, 1.0, False),  # norm ~0.69: max_norm / norm ~1.4 must not scale the gradients up
])
def test_clip_grad_norm_equals_torch(scale, max_norm, clips):
    ours, theirs = params_with_grads(scale, 8), params_with_grads(scale, 8)
    before = [p.grad.clone() if p.grad is not None else None for p in ours]
    norm = clip_grad_norm(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert norm.dtype == torch.float32 and norm.shape == ()
    assert torch.equal(norm, expected)
    for p, q in zip(ours, theirs):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad)
    clipped = norm > max_norm
    assert clipped == clips  # the cases cover both sides
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours if p.grad is not None]))
    if clipped:
        assert after == pytest.approx(max_norm * norm.item() / (norm.item() + 1e-6), rel=1e-6)
    else:
        assert all(torch.equal(p.grad, b) for p, b in zip(ours, before) if b is not None)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_clip_grad_norm_returns_a_non_finite_norm_and_leaves_the_gradients(bad):
    ours, theirs = params_with_grads(1.0, 9), params_with_grads(1.0, 9)
    for params in (ours, theirs):
        params[0].grad[3, 4] = bad
    with_grads = [i for i, p in enumerate(ours) if p.grad is not None]
    before = {i: ours[i].grad.clone() for i in with_grads}
    norm = clip_grad_norm(ours, 1.0)
    assert torch.isnan(norm) if math.isnan(bad) else norm == bad
    for i in with_grads:
        assert torch.allclose(ours[i].grad, before[i], rtol=0, atol=0, equal_nan=True)
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)  # PyTorch scales by 1 / inf = 0 (or by nan)
    assert not torch.allclose(theirs[4].grad, before[4], equal_nan=True)


def test_clip_grad_norm_edge_cases():
    assert clip_grad_norm([nn.Parameter(torch.ones(3))], 1.0) == 0.0  # no gradients at all
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 2.0)  # norm 4
    assert clip_grad_norm(p, 1.0) == 4.0 and torch.allclose(p.grad, torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([p], 0.0)
    bf16 = nn.Parameter(torch.zeros(1000, dtype=torch.bfloat16))
    bf16.grad = torch.full((1000,), 0.1, dtype=torch.bfloat16)
    norm = clip_grad_norm([bf16], 100.0)
    assert norm.dtype == torch.float32
    assert norm.item() == pytest.approx(math.sqrt(1000) * float(torch.tensor(0.1, dtype=torch.bfloat16)),
                                        rel=1e-6)
