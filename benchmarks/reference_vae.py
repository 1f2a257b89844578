"""pytorch/examples' ``vae/main.py``, written out as that script has it: the reference loop
that genlab's benchmarks measure themselves against, in the same process and the same run."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
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


class TorchvisionMNIST(torch.utils.data.Dataset):
    """What pytorch/examples' ``datasets.MNIST(..., transform=transforms.ToTensor())`` hands its DataLoader.

    ``__getitem__`` is torchvision 0.28's ``MNIST.__getitem__`` (a PIL "L" image from the uint8
    array) followed by its ``to_tensor`` (a copy to a uint8 tensor, HWC -> CHW, float / 255), written
    out because torchvision's PyPI wheel does not import against this machine's CPU build of torch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.data = images[:, 0]  # (N, 28, 28) uint8, as torchvision stores MNIST
        self.targets = labels if labels is not None else torch.zeros(len(images), dtype=torch.long)

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        pic = Image.fromarray(img.numpy())  # mode "L" for 2-D uint8 (torchvision passes mode="L" before Pillow 11.3)
        t = torch.from_numpy(np.array(pic, np.uint8, copy=True))
        t = t.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
        return t.to(dtype=torch.get_default_dtype()).div(255), target


class PerItemDataset(torch.utils.data.Dataset):
    """A leaner per-item Dataset than torchvision's: indexes an in-memory uint8 tensor, no PIL."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images, self.labels = images, labels

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i].float().div(255), int(self.labels[i]) if self.labels is not None else 0
