"""The GAN's networks: the tutorial's MLPs and DCGAN's strided convolutions, conditional by projection."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .config import GANConfig


class MinibatchStd(nn.Module):
    """Karras et al. (2018) sec. 3: append the average feature std of a group of samples as one more feature.

    A collapsed generator's batch has near-zero std, which D can then see. Groups
    are ``group_size`` consecutive samples (the whole batch when it does not
    divide), so a batch split across processes in multiples of 4 gives the same
    result as one process.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, h: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C+1, H, W); (B, F) -> (B, F+1)
        b = h.shape[0]
        g = self.group_size if b % self.group_size == 0 else b
        grouped = h.float().reshape(b // g, g, -1)  # (B/g, g, features)
        std = grouped.var(dim=1, unbiased=False).add(1e-8).sqrt().mean(dim=1)  # (B/g,)
        std = std.repeat_interleave(g).to(h.dtype)  # (B,)
        extra = std.view(b, 1, *([1] * (h.dim() - 2))).expand(b, 1, *h.shape[2:])
        return torch.cat([h, extra], dim=1)


class ProjectAndReshape(nn.ConvTranspose2d):
    """DCGAN's first layer, z (B, D, 1, 1) -> (B, C, k, k): a k x k transposed conv on a 1x1 input.

    On a 1x1 input that conv is one matrix product, z @ W.view(D, C * k * k), and computed as
    one it is about 15x faster on a CPU than the general transposed convolution (measured ad hoc: 10 ms -> 0.6 ms
    per batch of 128 at D = 100, C = 128, k = 7, bf16). Same parameters, same names, so runs
    saved with the plain layer load unchanged.
    """

    def forward(self, z: Tensor, output_size: list[int] | None = None) -> Tensor:
        if z.shape[-2:] != (1, 1) or output_size is not None:
            return super().forward(z, output_size)
        b, c, k = z.shape[0], self.out_channels, self.kernel_size[0]
        out = z.flatten(1) @ self.weight.flatten(1)  # (B, C * k * k)
        out = out.view(b, c, k, k)
        if self.bias is not None:
            out = out + self.bias.view(1, c, 1, 1)
        return out.contiguous(memory_format=torch.channels_last)


class _ChannelsLastGradient(torch.autograd.Function):
    """Identity forward (made channels_last); channels_last gradient backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def _channels_last_hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    return _ChannelsLastGradient.apply(output) if output.dim() == 4 else output


def keep_activations_channels_last(module: nn.Module) -> None:
    """Hold every activation's output, and the gradient flowing back into it, in channels_last.

    A gradient arriving in the other layout than the activation it meets (D's flatten, a
    transposed conv's input gradient) sends PyTorch's elementwise backward kernels down a
    strided path about 10x slower on a CPU (measured ad hoc, leaky_relu_backward on (128, 128, 7, 7), bf16:
    4.7 ms against 0.5 ms). Hooks, not extra layers: parameter names stay as they were.
    """
    for m in module.modules():
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            m.register_forward_hook(_channels_last_hook)


def _dcgan_sizes(image_shape: tuple) -> tuple[int, int]:
    """(start resolution, number of x2 upsamplings): 28 = 7 * 2^2, 32 = 4 * 2^3, 64 = 4 * 2^4."""
    h = image_shape[1]
    return (7, 2) if h == 28 else (4, 3) if h == 32 else (4, 4)


class Generator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        self.image_shape = (c, h, w)
        cond = cfg.label_embed_dim if cfg.conditional else 0
        self.embed = nn.Embedding(cfg.num_classes, cfg.label_embed_dim) if cfg.conditional else None
        d_in = cfg.latent_dim + cond
        layers: list[nn.Module] = []
        if cfg.arch == "mlp":
            widths = [d_in, *cfg.g_hidden]
            for a, b in zip(widths[:-1], widths[1:]):
                layers.append(nn.Linear(a, b))
                if cfg.batchnorm:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.LeakyReLU(0.2))
            layers += [nn.Linear(widths[-1], c * h * w), nn.Unflatten(1, (c, h, w))]
        else:
            start, n_up = _dcgan_sizes(cfg.image_shape)
            chans = [cfg.width * 2**i for i in reversed(range(n_up))]  # 28: [2w, w]; 32: [4w, 2w, w]; 64: [8w, ..., w]
            layers.append(nn.Unflatten(1, (d_in, 1, 1)))
            # a (start x start) transposed conv on a 1x1 input is DCGAN's "project and reshape"
            layers.append(ProjectAndReshape(d_in, chans[0], start, 1, 0, bias=not cfg.batchnorm))
            for a, b in zip(chans, [*chans[1:], c]):
                if cfg.batchnorm:
                    layers.append(nn.BatchNorm2d(a))
                layers.append(nn.ReLU())
                layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1, bias=(b == c) or not cfg.batchnorm))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)  # (B, latent_dim + label_embed_dim)
        return self.net(z)


class Discriminator(nn.Module):
    """images (B, C, H, W) in [-1, 1] [+ labels (B,)] -> logits (B,).

    ``features`` gives phi(x) (B, F); the logit is ``head(phi) + <embed(y), phi>``,
    the projection discriminator of Miyato & Koyama (2018) when conditional.
    """

    def __init__(self, cfg: GANConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        bn = cfg.d_batchnorm
        layers: list[nn.Module] = []
        if cfg.arch == "mlp":
            layers.append(nn.Flatten())
            widths = [c * h * w, *cfg.d_hidden]
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
                layers.append(nn.Linear(a, b))
                if bn and i > 0:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.LeakyReLU(0.2))
            if cfg.minibatch_std:
                layers.append(MinibatchStd())
            n_feat = widths[-1] + int(cfg.minibatch_std)
        else:
            start, n_down = _dcgan_sizes(cfg.image_shape)
            chans = [c, *(cfg.width * 2**i for i in range(n_down))]  # 28: [c, w, 2w]; 32: [c, w, 2w, 4w]
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
                layers.append(nn.Conv2d(a, b, 4, 2, 1, bias=not (bn and i > 0)))
                if bn and i > 0:
                    layers.append(nn.BatchNorm2d(b))
                layers.append(nn.LeakyReLU(0.2))
            if cfg.minibatch_std:
                layers.append(MinibatchStd())
            layers.append(nn.Flatten())
            n_feat = (chans[-1] + int(cfg.minibatch_std)) * start * start
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(n_feat, 1)
        self.embed = nn.Embedding(cfg.num_classes, n_feat) if cfg.conditional else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        phi = self.features(x)  # (B, F)
        out = self.head(phi).squeeze(1)  # (B,)
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional discriminator needs labels")
            out = out + (self.embed(y) * phi).sum(1)
        return out


def _init_dcgan(module: nn.Module) -> None:
    """Radford et al. (2015): all weights ~ N(0, 0.02); BN scale ~ N(1, 0.02); biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            bias = getattr(m, "bias", None)  # nn.Embedding has none
            if isinstance(bias, torch.Tensor):
                nn.init.zeros_(bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _apply_spectral_norm(module: nn.Module) -> None:
    """W -> W / sigma(W) on every weight layer, sigma by one power iteration per training forward."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            _spectral_norm(m)
