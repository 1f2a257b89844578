"""pytorch/examples' ``vae/main.py``, written out as that script has it: the reference loop
that genlab's benchmarks measure themselves against, in the same process and the same run."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ExamplesVAE(nn.Module):
    """pytorch/examples' VAE, layer for layer: 784-400-(20, 20), 20-400-784."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def examples_loss(recon_x, x, mu, logvar):
    """BCE on sigmoid outputs summed over pixels and batch, plus the closed-form KL."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


class PerItemDataset(torch.utils.data.Dataset):
    """What torchvision's MNIST + ToTensor hands the DataLoader: one float image at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images, self.labels = images, labels

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i].float().div(255), int(self.labels[i]) if self.labels is not None else 0
