"""PyTorch reference of AMFMN, written from the model and loss of docs/ARCHITECTURE.md in the module layout of the original
code, so that its state_dict() keys are the original checkpoint keys.

Used by the parity tests (scores, loss, gradients against amfmn on the same weights and
inputs), the checkpoint-compatibility tests (load_state_dict(strict=True) of amfmn's
safetensors) and the benchmarks (the original's training step and evaluation).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def l2norm(x, dim, eps=1e-8):
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + eps)


def cosine_similarity(x1, x2, dim=-1, eps=1e-8):
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


class ExtractFeature(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.resnet = torchvision.models.resnet18(weights=None)
        self.up_sample_2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.linear = nn.Linear(512, embed_dim)

    def forward(self, img):
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(img))))
        f1 = r.layer1(x)
        f2 = r.layer2(f1)
        f3 = r.layer3(f2)
        f4 = r.layer4(f3)
        lower = torch.cat([f1, self.up_sample_2(f2)], dim=1)
        higher = torch.cat([f3, self.up_sample_2(f4)], dim=1)
        solo = self.linear(torch.mean(f4.view(f4.shape[0], 512, -1), dim=-1))
        return lower, higher, solo


class VSA_Module(nn.Module):
    def __init__(self, channel_size, out_channels, embed_dim, image_size):
        super().__init__()
        self.LF_conv = nn.Conv2d(192, channel_size, kernel_size=3, stride=4)
        self.HF_conv = nn.Conv2d(768, channel_size, kernel_size=1, stride=1)
        self.conv1x1_1 = nn.Conv2d(channel_size * 2, out_channels, kernel_size=1)
        self.conv1x1_2 = nn.Conv2d(channel_size * 2, out_channels, kernel_size=1)
        side = image_size // 16
        self.solo_attention = nn.Linear(out_channels * side * side, embed_dim)

    def forward(self, lower, higher, solo):
        lower = self.LF_conv(lower)
        higher = self.HF_conv(higher)
        concat = torch.cat([lower, higher], dim=1)
        concat = higher.mean(dim=1, keepdim=True).expand_as(concat) + concat
        main = self.conv1x1_1(concat)
        gate = torch.sigmoid(self.conv1x1_2(concat))
        atted = (main * gate).view(main.shape[0], -1)
        return solo * torch.sigmoid(self.solo_attention(atted))


class SequentialDropout(nn.Module):
    """One Bernoulli mask per sequence batch, reused at every step (or a given mask)."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.noise = None

    def forward(self, x):
        if self.p > 0 and self.training:
            if self.noise is None:
                self.noise = x.new_empty(x.shape).bernoulli_(1 - self.p).div_(1 - self.p)
            return x * self.noise
        return x

    def end_of_sequence(self):
        self.noise = None


class BayesianGRUCell(nn.Module):
    def __init__(self, input_size, hidden_size, dropout):
        super().__init__()
        self.weight_ir = nn.Linear(input_size, hidden_size, bias=True)
        self.weight_ii = nn.Linear(input_size, hidden_size, bias=True)
        self.weight_in = nn.Linear(input_size, hidden_size, bias=True)
        self.weight_hr = nn.Linear(hidden_size, hidden_size, bias=False)
        self.weight_hi = nn.Linear(hidden_size, hidden_size, bias=False)
        self.weight_hn = nn.Linear(hidden_size, hidden_size, bias=False)
        self.drops = nn.ModuleList([SequentialDropout(dropout) for _ in range(6)])
        self.hidden_size = hidden_size

    def forward(self, x, hx):
        if hx is None:
            hx = x.new_zeros(x.size(0), self.hidden_size)
        d = self.drops
        r = torch.sigmoid(self.weight_ir(d[0](x)) + self.weight_hr(d[3](hx)))
        i = torch.sigmoid(self.weight_ii(d[1](x)) + self.weight_hi(d[4](hx)))
        n = torch.tanh(self.weight_in(d[2](x)) + r * self.weight_hn(d[5](hx)))
        return (1 - i) * n + i * hx

    def end_of_sequence(self):
        for d in self.drops:
            d.end_of_sequence()


class BayesianGRU(nn.Module):
    def __init__(self, input_size, hidden_size, dropout):
        super().__init__()
        self.gru_cell = BayesianGRUCell(input_size, hidden_size, dropout)

    def forward(self, x, max_length):
        hx, out = None, []
        for i in range(max_length):
            hx = self.gru_cell(x[:, i, :], hx)
            out.append(hx.unsqueeze(1))
        self.gru_cell.end_of_sequence()
        return torch.cat(out, 1)


def process_lengths(ids):
    return [int(ids.size(1) - n) for n in ids.eq(0).sum(1)]


def select_last(x, lengths):
    mask = torch.zeros_like(x)
    for i, n in enumerate(lengths):
        mask[i][n - 1].fill_(1)
    return (x * mask).sum(1)


class BayesianUniSkip(nn.Module):
    def __init__(self, vocab_size, dropout):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, 620, padding_idx=0)
        self.rnn = BayesianGRU(620, 2400, dropout)

    def forward(self, ids):
        lengths = process_lengths(ids)
        x = self.rnn(self.embedding(ids), max(lengths))
        return select_last(x, lengths)


class UniSkip(nn.Module):
    def __init__(self, vocab_size, dropout):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, 620, padding_idx=0)
        self.rnn = nn.GRU(620, 2400, batch_first=True)

    def forward(self, ids):
        lengths = process_lengths(ids)
        x, _ = self.rnn(self.embedding(ids))
        return select_last(x, lengths)


class BiSkip(nn.Module):
    def __init__(self, vocab_size, dropout):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, 620, padding_idx=0)
        self.rnn = nn.GRU(620, 1200, batch_first=True, bidirectional=True)

    def forward(self, ids):
        lengths = process_lengths(ids)
        x = nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        _, hn = self.rnn(x)
        return hn.transpose(0, 1).contiguous().view(ids.size(0), 2400)


SEQ2VEC = {"BayesianUniSkip": BayesianUniSkip, "UniSkip": UniSkip, "BiSkip": BiSkip}


class TextFeature(nn.Module):
    def __init__(self, vocab_size, kind, dropout, embed_dim):
        super().__init__()
        self.seq2vec = SEQ2VEC[kind](vocab_size, dropout)
        self.to_out = nn.Linear(2400, embed_dim)

    def forward(self, ids):
        return F.relu(self.to_out(self.seq2vec(ids)))


class CrossAttention(nn.Module):
    def __init__(self, att_type, dim):
        super().__init__()
        self.att_type = att_type
        if att_type == "soft_att":
            self.cross_attention = nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())
        elif att_type == "fusion_att":
            self.cross_attention_fc1 = nn.Sequential(nn.Linear(2 * dim, dim), nn.Sigmoid())
            self.cross_attention_fc2 = nn.Sequential(nn.Linear(2 * dim, dim))
        elif att_type == "similarity_att":
            self.fc_visual = nn.Sequential(nn.Linear(dim, dim))
            self.fc_text = nn.Sequential(nn.Linear(dim, dim))
        else:
            raise ValueError(att_type)

    def forward(self, visual, text):
        bv, bt = visual.shape[0], text.shape[0]
        if self.att_type == "soft_att":
            gate = self.cross_attention(visual).unsqueeze(1).expand(-1, bt, -1)
            return gate * text.unsqueeze(0).expand(bv, -1, -1)
        if self.att_type == "fusion_att":
            v = visual.unsqueeze(1).expand(-1, bt, -1)
            t = text.unsqueeze(0).expand(bv, -1, -1)
            u = torch.cat([v, t], dim=-1)
            return self.cross_attention_fc1(u) * self.cross_attention_fc2(u)
        v = self.fc_visual(visual).unsqueeze(1).expand(-1, bt, -1)
        t = self.fc_text(text).unsqueeze(0).expand(bv, -1, -1)
        return torch.sigmoid(v * t) * t


class VGMF_Fusion(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gate = nn.Linear(2 * dim, dim)

    def forward(self, sv, kv):
        sv, kv = l2norm(sv, -1), l2norm(kv, -1)
        w = torch.sigmoid(self.gate(torch.cat([sv, kv], dim=-1)))
        return w * sv + (1 - w) * kv


class AMFMN(nn.Module):
    def __init__(self, vocab_size, att_type="soft_att", seq2vec="BayesianUniSkip", dropout=0.25, embed_dim=512,
                 image_size=256, multiscale_input_channel=3, multiscale_output_channel=1):
        super().__init__()
        self.extract_feature = ExtractFeature(embed_dim)
        self.mvsa = VSA_Module(multiscale_input_channel, multiscale_output_channel, embed_dim, image_size)
        self.text_feature = TextFeature(vocab_size, seq2vec, dropout, embed_dim)
        self.cross_attention_s = CrossAttention(att_type, embed_dim)
        self.vgmf_gate = VGMF_Fusion(embed_dim)

    def forward(self, img, ids):
        lower, higher, solo = self.extract_feature(img)
        visual = self.mvsa(lower, higher, solo)
        text = self.text_feature(ids)
        ft = self.cross_attention_s(visual, text)
        visual = visual.unsqueeze(1).expand(-1, ft.shape[1], -1)
        return cosine_similarity(visual, ft)


def contrastive_loss(scores, margin, max_violation=False):
    """The original utils.calcul_loss; `margin` is a float or a [B, B] matrix of margins."""
    diagonal = scores.diag().view(scores.size(0), 1)
    d1 = diagonal.expand_as(scores)
    d2 = diagonal.t().expand_as(scores)
    cost_s = (margin + scores - d1).clamp(min=0)
    cost_im = (margin + scores - d2).clamp(min=0)
    mask = torch.eye(scores.size(0), dtype=torch.bool, device=scores.device)
    cost_s = cost_s.masked_fill(mask, 0)
    cost_im = cost_im.masked_fill(mask, 0)
    if max_violation:
        cost_s = cost_s.max(1)[0]
        cost_im = cost_im.max(0)[0]
    return cost_s.sum() + cost_im.sum()


def dynamic_margins(prior, gamma, beta):
    """Dynamic margin: alpha = gamma (e^beta - e^(beta p)) / (e^beta - 1)."""
    return gamma * (math.exp(beta) - torch.exp(beta * prior)) / (math.exp(beta) - 1)
