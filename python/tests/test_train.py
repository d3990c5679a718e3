"""A toy training run through infllm.torch.infllmv2_attention inside a torch.nn.Module: every
position must output its sequence's first token, which it can only see through attention (the
first block is always selected), over a packed batch, sparse throughout. The loss must fall."""

import math

import torch

import infllm.torch as it
from conftest import SMALL

VOCAB, D, HQ, HKV, HD = 16, 32, 4, 2, 16


class FirstTokenModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.first = torch.nn.Parameter(torch.randn(D))          # marks position 0 of a sequence
        self.qkv = torch.nn.Linear(D, (HQ + 2 * HKV) * HD)
        self.out = torch.nn.Linear(HQ * HD, VOCAB)

    def forward(self, tokens, starts, cu_seqlens):
        x = self.embed(tokens) + starts[:, None] * self.first
        t = x.shape[0]
        q, k, v = self.qkv(x).view(t, HQ + 2 * HKV, HD).split([HQ, HKV, HKV], dim=1)
        o = it.infllmv2_attention(q.contiguous(), k.contiguous(), v.contiguous(), config=SMALL,
                                  cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens)
        return self.out(o.reshape(t, HQ * HD))


def test_toy_training_loss_goes_down(device):
    torch.manual_seed(0)
    model = FirstTokenModel().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    lens = [96, 160]                                              # 6 and 10 blocks of 16: sparse rows
    cu = torch.tensor([0, 96, 256], dtype=torch.int32, device=device)
    starts = torch.zeros(256, device=device)
    starts[[0, 96]] = 1.0
    losses = []
    for _ in range(200):
        tokens = torch.randint(0, VOCAB, (256,), device=device)
        target = torch.cat([tokens[0].repeat(lens[0]), tokens[96].repeat(lens[1])])
        loss = torch.nn.functional.cross_entropy(model(tokens, starts, cu), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert abs(first - math.log(VOCAB)) < 0.5, first            # starts at chance
    assert last < 0.4 * first, losses                             # and learns the task
