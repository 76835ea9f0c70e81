"""The reference networks: four small digits models, each exercising a different part of the compiler (Conv, Gemm,
unfolded BatchNorm, MatMul attention), and two CIFAR-style ResNets of the paper's families for the shapes32 task."""

import math

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv-ReLU x3 with two max-pools, then one Linear head: the default demo model."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """64 -> 128 -> 64 -> 10 with ReLU: fully connected layers that export as Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class BasicBlock(nn.Module):
    """Conv-BN-ReLU-Conv-BN plus a skip; a strided 1x1 Conv-BN projection when the shape changes."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Conv-BN stem, three basic blocks (16, 32 strided, 32), global average pool, Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.head(features.mean(dim=(2, 3)))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet-(6n+2): 3x3 Conv-BN-ReLU stem (16), three stages of n basic blocks (16, 32, 64; the last
    two start with stride 2 and a 1x1 Conv-BN projection), global average pool, Linear head."""

    def __init__(self, blocks_per_stage: int, channels_in: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels_in, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, width = [], 16
        for stage_width, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(width, stage_width, stride if index == 0 else 1))
                width = stage_width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.head(features.mean(dim=(2, 3)))


def resnet8() -> CifarResNet:
    """One basic block per stage: 7 convolutions and the head."""
    return CifarResNet(blocks_per_stage=1)


def resnet20() -> CifarResNet:
    """Three basic blocks per stage: 19 convolutions and the head."""
    return CifarResNet(blocks_per_stage=3)


class SelfAttention(nn.Module):
    """Multi-head self-attention written with torch.matmul, so it exports as plain MatMul/Softmax (no fused attention op)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.reshape(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(mixed.transpose(1, 2).reshape(batch, tokens, dim))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallTransformer(nn.Module):
    """Rows of the 8x8 image as 8 tokens: embedding, learned positions, two encoder layers, mean-pool, Linear head."""

    def __init__(
        self, tokens: int = 8, token_dim: int = 8, dim: int = 32, heads: int = 2, hidden: int = 64, layers: int = 2
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(token_dim, dim)
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
        self.layers = nn.Sequential(*(EncoderLayer(dim, heads, hidden) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.embed(x) + self.position)
        return self.head(self.norm(x).mean(dim=1))


ARCHITECTURES = {
    "cnn": SmallCNN,
    "mlp": MLP,
    "resnet": SmallResNet,
    "transformer": SmallTransformer,
    "resnet8": resnet8,
    "resnet20": resnet20,
}


def weight_count(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
