"""Four PyTorch decoders ported to Flax NNX with one `load_torch_state_dict` call on an abstract model.

Each torch model is the oracle (CPU, float32): the NNX model, built with `nnx.eval_shape` and loaded
from the torch model's `state_dict`, gives PyTorch's output and PyTorch's gradients for every input
and every parameter, to a relative error of 1e-5 (max |difference| / max |PyTorch's|). Sizes are
small on purpose: the structure of each decoder is what is tested.
"""

import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import linen, nnx
from torch import nn

import transconv_jax as tc
from transconv_jax import linen as tcl
from transconv_jax import nnx as tcn

RTOL = 1e-5


def rel_err(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def randn(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def channels_last(a) -> np.ndarray:
    return np.moveaxis(np.asarray(a), 1, -1)


def port(factory, state_dict) -> nnx.Module:
    """The whole port: an abstract model (no initialiser runs) filled by one call."""
    model = nnx.eval_shape(factory)
    assert isinstance(jax.tree.leaves(nnx.state(model))[0], jax.ShapeDtypeStruct)
    assert tc.load_torch_state_dict(model, state_dict) == tc.IncompatibleKeys([], [], [])
    return model


def compare(oracle: nn.Module, model: nnx.Module, inputs: list[np.ndarray]) -> float:
    """The largest relative error of output, input gradients and every parameter gradient against `oracle`."""
    oracle.eval()
    tin = [torch.tensor(a, requires_grad=True) for a in inputs]
    out = oracle(*tin)
    cot = randn(*out.shape, seed=7)
    out.backward(torch.tensor(cot))
    torch_grads = {name: p.grad.numpy() for name, p in oracle.named_parameters()}

    def loss(m, *xs):
        y = m(*xs)
        return jnp.vdot(y, channels_last(cot)), y

    xs = [channels_last(a) for a in inputs]
    grad_fn = nnx.grad(loss, argnums=tuple(range(len(xs) + 1)), has_aux=True)
    grads, y = nnx.jit(grad_fn)(model, *xs)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    our_grads = tc.torch_state_dict(nnx.merge(graphdef, grads[0], rest))
    errors = {"output": rel_err(y, channels_last(out.detach()))}
    errors |= {f"input {i}": rel_err(g, channels_last(t.grad)) for i, (g, t) in enumerate(zip(grads[1:], tin))}
    scale = max(np.abs(g).max() for g in torch_grads.values())
    for name, g in torch_grads.items():
        if np.abs(g).max() < RTOL * scale:  # zero but for rounding, e.g. a bias before a normalisation
            assert np.abs(our_grads[name]).max() < RTOL * scale, name
        else:
            errors[name] = rel_err(our_grads[name], g)
    worst = max(errors, key=errors.get)
    assert errors[worst] < RTOL, (worst, errors)
    print(f"{type(oracle).__name__}: max relative error {errors[worst]:.1e} ({worst}), {len(torch_grads)} parameters")
    return errors[worst]


def randomize_running_stats(model: nn.Module) -> None:
    """BatchNorm's running statistics drawn at random, so that loading them is checked too."""
    with torch.no_grad():
        for i, m in enumerate(model.modules()):
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
                m.running_mean.copy_(torch.tensor(randn(m.num_features, seed=i)))
                m.running_var.copy_(torch.tensor(np.exp(randn(m.num_features, seed=i + 100))))
                m.weight.copy_(torch.tensor(1 + randn(m.num_features, seed=i + 200) / 4))
                m.bias.copy_(torch.tensor(randn(m.num_features, seed=i + 300) / 4))


def batch_norm(n: int) -> nnx.BatchNorm:
    return nnx.BatchNorm(n, use_running_average=True, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------- DCGAN generator


class TorchDCGAN(nn.Module):
    """The DCGAN tutorial's generator (pytorch/examples), with small channel counts."""

    def __init__(self, nz=8, ngf=2, nc=3):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z):
        return self.main(z)


class DCGAN(nnx.Module):
    def __init__(self, nz=8, ngf=2, nc=3, *, rngs: nnx.Rngs):
        self.main = nnx.Sequential(
            tcn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False, rngs=rngs), batch_norm(ngf * 8), nnx.relu,
            tcn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False, rngs=rngs), batch_norm(ngf * 4), nnx.relu,
            tcn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False, rngs=rngs), batch_norm(ngf * 2), nnx.relu,
            tcn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False, rngs=rngs), batch_norm(ngf), nnx.relu,
            tcn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False, rngs=rngs), jnp.tanh,
        )  # fmt: skip

    def __call__(self, z):
        return self.main(z)


def test_dcgan_generator():
    torch.manual_seed(0)
    oracle = TorchDCGAN()
    randomize_running_stats(oracle)
    model = port(lambda: DCGAN(rngs=nnx.Rngs(0)), oracle.state_dict())
    compare(oracle, model, [randn(2, 8, 1, 1)])


# ------------------------------------------------------------------------------ U-Net up path


class TorchDoubleConv(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, x):
        return self.double_conv(x)


class TorchUp(nn.Module):
    """milesial/Pytorch-UNet's `Up` (bilinear=False): ConvTranspose2d(k=2, s=2), F.pad to the skip, concat."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, kernel_size=2, stride=2)
        self.conv = TorchDoubleConv(c_in, c_out)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class TorchUNetUp(nn.Module):
    def __init__(self):
        super().__init__()
        self.up1, self.up2 = TorchUp(8, 4), TorchUp(4, 2)
        self.outc = nn.Conv2d(2, 3, kernel_size=1)

    def forward(self, x3, x2, x1):
        return self.outc(self.up2(self.up1(x3, x2), x1))


class DoubleConv(nnx.Module):
    def __init__(self, c_in, c_out, *, rngs):
        self.double_conv = nnx.Sequential(
            nnx.Conv(c_in, c_out, (3, 3), padding=1, use_bias=False, rngs=rngs), batch_norm(c_out), nnx.relu,
            nnx.Conv(c_out, c_out, (3, 3), padding=1, use_bias=False, rngs=rngs), batch_norm(c_out), nnx.relu,
        )  # fmt: skip

    def __call__(self, x):
        return self.double_conv(x)


class Up(nnx.Module):
    def __init__(self, c_in, c_out, *, rngs):
        self.up = tcn.ConvTranspose2d(c_in, c_in // 2, kernel_size=2, stride=2, rngs=rngs)
        self.conv = DoubleConv(c_in, c_out, rngs=rngs)

    def __call__(self, x1, x2):
        x1 = self.up(x1)  # channels last: (N, H, W, C)
        dy, dx = x2.shape[1] - x1.shape[1], x2.shape[2] - x1.shape[2]
        x1 = jnp.pad(x1, ((0, 0), (dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)))  # F.pad's zeros
        return self.conv(jnp.concatenate([x2, x1], axis=-1))


class UNetUp(nnx.Module):
    def __init__(self, *, rngs):
        self.up1, self.up2 = Up(8, 4, rngs=rngs), Up(4, 2, rngs=rngs)
        self.outc = nnx.Conv(2, 3, (1, 1), rngs=rngs)

    def __call__(self, x3, x2, x1):
        return self.outc(self.up2(self.up1(x3, x2), x1))


def test_unet_up_path_with_odd_skips():
    torch.manual_seed(0)
    oracle = TorchUNetUp()
    randomize_running_stats(oracle)
    model = port(lambda: UNetUp(rngs=nnx.Rngs(0)), oracle.state_dict())
    compare(oracle, model, [randn(2, 8, 4, 4, seed=1), randn(2, 4, 9, 9, seed=2), randn(2, 2, 19, 19, seed=3)])


def test_odd_skip_output_shape_versus_f_pad():
    """output_shape=(9, 9) equals F.pad's 8 -> 9 except on the added row and column, which hold the bias, not 0."""
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(4, 2, kernel_size=2, stride=2)
    layer = nnx.eval_shape(lambda: tcn.ConvTranspose2d(4, 2, 2, 2, rngs=nnx.Rngs(0)))
    tc.load_torch_state_dict(layer, up.state_dict())
    x = randn(1, 4, 4, 4)
    padded = channels_last(F.pad(up(torch.tensor(x)), [0, 1, 0, 1]).detach())
    ours = np.asarray(layer(channels_last(x), output_shape=(9, 9)))
    assert rel_err(ours[:, :8, :8], padded[:, :8, :8]) < RTOL
    bias = up.bias.detach().numpy()
    np.testing.assert_allclose(ours[:, 8, :], np.broadcast_to(bias, (1, 9, 2)), rtol=1e-6)
    assert np.all(padded[:, 8, :] == 0)


# ------------------------------------------------------------------------------- HiFi-GAN upsampler


def weight_norm_old(module):
    """`torch.nn.utils.weight_norm`, HiFi-GAN's spelling (deprecated in favour of parametrizations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module)


class TorchHiFiGANUp(nn.Module):
    """HiFi-GAN's generator without its residual blocks: conv_pre, the four weight_norm'ed upsamplers, conv_post."""

    RATES, KERNELS = (8, 8, 2, 2), (16, 16, 4, 4)

    def __init__(self, mels=4, ch=16):
        super().__init__()
        self.conv_pre = weight_norm_old(nn.Conv1d(mels, ch, 7, 1, padding=3))
        self.ups = nn.ModuleList(
            weight_norm_old(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(self.RATES, self.KERNELS))
        )
        self.conv_post = nn.utils.parametrizations.weight_norm(nn.Conv1d(ch // 16, 1, 7, 1, padding=3))

    def forward(self, x):
        x = self.conv_pre(x)
        for up in self.ups:
            x = up(F.leaky_relu(x, 0.1))
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class HiFiGANUp(nnx.Module):
    def __init__(self, mels=4, ch=16, *, rngs):
        self.conv_pre = nnx.Conv(mels, ch, (7,), padding=3, rngs=rngs)
        self.ups = nnx.List(
            tcn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2, rngs=rngs)
            for i, (u, k) in enumerate(zip(TorchHiFiGANUp.RATES, TorchHiFiGANUp.KERNELS))
        )
        self.conv_post = nnx.Conv(ch // 16, 1, (7,), padding=3, rngs=rngs)

    def __call__(self, x):
        x = self.conv_pre(x)
        for up in self.ups:
            x = up(nnx.leaky_relu(x, 0.1))
        return jnp.tanh(self.conv_post(nnx.leaky_relu(x, 0.01)))


def remove_weight_norms(model: nn.Module) -> nn.Module:
    """Plain weights (g * v / ||v||, computed once by torch), in place: the oracle for the weights' gradients."""
    for m in model.modules():
        if hasattr(m, "weight_g"):
            nn.utils.remove_weight_norm(m)
        elif nn.utils.parametrize.is_parametrized(m, "weight"):
            nn.utils.parametrize.remove_parametrizations(m, "weight")
    return model


def test_hifigan_upsampler_with_weight_norm():
    torch.manual_seed(0)
    oracle = TorchHiFiGANUp()
    with torch.no_grad():
        for m in oracle.modules():  # g away from ||v||, so that a loader which skips the fold fails
            if hasattr(m, "weight_g"):
                m.weight_g.mul_(torch.rand(m.weight_g.shape) + 0.5)
        oracle.conv_post.parametrizations.weight.original0.mul_(3.0)
    keys = oracle.state_dict().keys()
    assert "ups.0.weight_g" in keys and "conv_post.parametrizations.weight.original1" in keys
    model = port(lambda: HiFiGANUp(rngs=nnx.Rngs(0)), oracle.state_dict())
    x = randn(1, 4, 3)
    with torch.no_grad():
        before = oracle(torch.tensor(x))
    plain = remove_weight_norms(oracle)
    assert rel_err(plain(torch.tensor(x)).detach(), before) < 1e-6
    compare(plain, model, [x])


# ---------------------------------------------------------------------------------- 3-D decoder


class TorchDecoder3d(nn.Module):
    """V-Net's up transition (ConvTranspose3d k2 s2, norm, PReLU, concat the skip), then a grouped k3 s2 p1 op1 layer."""

    def __init__(self):
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(8, 4, kernel_size=2, stride=2)
        self.norm1 = nn.InstanceNorm3d(4, affine=True)
        self.act1 = nn.PReLU()
        self.up2 = nn.ConvTranspose3d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.norm2 = nn.InstanceNorm3d(4, affine=True)
        self.act2 = nn.PReLU()
        self.head = nn.Conv3d(4, 2, kernel_size=1)

    def forward(self, x, skip):
        x = self.act1(self.norm1(self.up_conv(x)))
        x = self.act2(self.norm2(self.up2(torch.cat((x, skip), 1))))
        return self.head(x)


def instance_norm(c: int) -> nnx.GroupNorm:
    """PyTorch's InstanceNorm3d(c, affine=True): one group per channel, eps 1e-5."""
    return nnx.GroupNorm(c, num_groups=c, epsilon=1e-5, use_fast_variance=False, rngs=nnx.Rngs(0))


class Decoder3d(nnx.Module):
    def __init__(self, *, rngs):
        self.up_conv = tcn.ConvTranspose3d(8, 4, kernel_size=2, stride=2, rngs=rngs)
        self.norm1, self.act1 = instance_norm(4), nnx.PReLU(0.25)
        self.up2 = tcn.ConvTranspose3d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2, rngs=rngs)
        self.norm2, self.act2 = instance_norm(4), nnx.PReLU(0.25)
        self.head = nnx.Conv(4, 2, (1, 1, 1), rngs=rngs)

    def __call__(self, x, skip):
        x = self.act1(self.norm1(self.up_conv(x)))
        x = self.act2(self.norm2(self.up2(jnp.concatenate((x, skip), axis=-1))))
        return self.head(x)


def test_3d_decoder_groups_instance_norm_prelu():
    torch.manual_seed(0)
    oracle = TorchDecoder3d()
    with torch.no_grad():
        for m in (oracle.norm1, oracle.norm2):
            m.weight.copy_(1 + torch.randn(4) / 4), m.bias.copy_(torch.randn(4) / 4)
        oracle.act1.weight.fill_(0.1), oracle.act2.weight.fill_(0.3)
    model = port(lambda: Decoder3d(rngs=nnx.Rngs(0)), oracle.state_dict())
    compare(oracle, model, [randn(1, 8, 2, 2, 2, seed=1), randn(1, 4, 4, 4, 4, seed=2)])


# ---------------------------------------------------------------------------- round trip, Linen


def test_torch_state_dict_round_trips_into_torch():
    """torch_state_dict of a ported model loads into the torch model with strict=True and gives its outputs."""
    torch.manual_seed(0)
    source = TorchUNetUp()
    randomize_running_stats(source)
    model = port(lambda: UNetUp(rngs=nnx.Rngs(0)), source)  # the torch module itself: its classes are checked
    torch.manual_seed(1)
    target = TorchUNetUp().eval()
    target.load_state_dict({k: torch.from_numpy(v) for k, v in tc.torch_state_dict(model).items()}, strict=True)
    xs = [randn(1, 8, 4, 4), randn(1, 4, 9, 9), randn(1, 2, 19, 19)]
    with torch.no_grad():
        assert rel_err(target(*map(torch.tensor, xs)), source.eval()(*map(torch.tensor, xs))) == 0
    assert set(tc.torch_state_dict(model)) == set(source.state_dict())


def test_linen_counterpart():
    """Linen: Dense, Conv, BatchNorm and this library's ConvTranspose2d, named by Linen, renamed by key_map."""
    torch.manual_seed(0)
    oracle = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 5),
    ).eval()  # fmt: skip
    randomize_running_stats(oracle)

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.Conv(4, (3, 3), padding=1)(x)
            x = linen.BatchNorm(use_running_average=True, epsilon=1e-5)(x)
            x = tcl.ConvTranspose2d(4, 4, 4, 2, 1, groups=2)(x)
            x = jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1)  # PyTorch's flatten order: channels first
            return linen.Dense(5)(x)

    x = randn(2, 3, 4, 4)
    abstract = jax.eval_shape(Net().init, jax.random.key(0), channels_last(x))
    names = {"0": "Conv_0", "1": "BatchNorm_0", "2": "ConvTranspose2d_0", "4": "Dense_0"}
    variables, problems = tc.load_torch_state_dict_linen(abstract, oracle.state_dict(), key_map=names)
    assert problems == tc.IncompatibleKeys([], [], [])
    out = Net().apply(variables, channels_last(x))
    assert rel_err(out, oracle(torch.tensor(x)).detach()) < RTOL
    params, _ = tc.load_torch_state_dict_linen(abstract["params"], {
        k: v for k, v in oracle.state_dict().items() if "running" not in k and "num_batches" not in k
    }, key_map=names)  # fmt: skip
    np.testing.assert_array_equal(params["Dense_0"]["kernel"], variables["params"]["Dense_0"]["kernel"])
    with pytest.raises(ValueError, match=r"kernel of shape \(3, 3, 3, 4\), which could be a Conv or a ConvTranspose"):
        tc.load_torch_state_dict_linen({"params": {"up": {"kernel": np.zeros((3, 3, 3, 4))}}}, {})


# ------------------------------------------------------------------------------------- errors


def test_every_wrong_key_in_one_error():
    torch.manual_seed(0)
    sd = TorchDCGAN().state_dict()
    sd["main.0.weight"] = sd["main.0.weight"][:, :8]  # 16 -> 8 output channels
    del sd["main.1.running_var"], sd["main.12.weight"]
    sd["main.99.weight"] = torch.zeros(3)
    model = nnx.eval_shape(lambda: DCGAN(rngs=nnx.Rngs(0)))
    pattern = (
        r"does not fit the model \(4 problems\):\n  missing keys.*:\n    main\.1\.running_var\n    main\.12\.weight\n"
        r"  unexpected keys.*:\n    main\.99\.weight\n  mismatched keys:\n    main\.0\.weight: PyTorch's \(8, 8, 4, 4\) "
        r"becomes \(4, 4, 8, 8\) as conv_transpose but ConvTranspose2d at main\.layers\.0\.kernel is \(4, 4, 8, 16\)"
        r"(.|\n)*key_map="
    )
    with pytest.raises(ValueError, match=pattern):
        tc.load_torch_state_dict(model, sd)
    assert isinstance(jax.tree.leaves(nnx.state(model))[0], jax.ShapeDtypeStruct)  # nothing loaded
    missing, unexpected, mismatched = tc.load_torch_state_dict(model, sd, strict=False)
    assert missing == ["main.1.running_var", "main.12.weight"] and unexpected == ["main.99.weight"]
    assert len(mismatched) == 1
    assert model.main.layers[3].kernel.shape == (4, 4, 16, 8) and isinstance(
        model.main.layers[3].kernel[...], jax.Array
    )


def test_key_map_renames():
    torch.manual_seed(0)
    wrapped = {f"generator.{k}": v for k, v in TorchDCGAN().state_dict().items()}
    for key_map in ({"generator": ""}, lambda k: k.removeprefix("generator.")):
        model = nnx.eval_shape(lambda: DCGAN(rngs=nnx.Rngs(0)))
        assert tc.load_torch_state_dict(model, wrapped, key_map=key_map).missing_keys == []


def test_conv_weight_refused_as_conv_transpose():
    """A square Conv2d weight fits a ConvTranspose kernel's shape; the module's class says it is not one."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3)
    layer = tcn.ConvTranspose2d(4, 4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"kind='conv' \(a PyTorch Conv\{1,2,3\}d weight.*cannot load into ConvTranspose2d"
    ):
        tc.load_torch_weights(layer, conv)
    with pytest.raises(ValueError, match=r"kind='conv_transpose' but the module is a Conv2d, whose weight is \(out"):
        tc.torch_to_flax(conv, kind="conv_transpose")
    with pytest.raises(TypeError, match=r"weight is a bare array of shape \(4, 4, 3, 3\).*kind='conv_transpose'"):
        tc.load_torch_weights(layer, conv.weight, conv.bias)
    with pytest.raises(TypeError, match=r"weight is a mapping.*load_torch_state_dict"):
        tc.torch_to_flax(conv.state_dict())
    with pytest.raises(
        ValueError, match=r"0\.weight: the PyTorch module is a conv layer but ConvTranspose2d at layers\.0"
    ):
        tc.load_torch_state_dict(nnx.Sequential(layer), nn.Sequential(conv))
    torch_layer = nn.ConvTranspose2d(4, 4, 3)
    tc.load_torch_weights(layer, torch_layer)
    np.testing.assert_array_equal(tc.flax_to_torch(layer)["weight"], torch_layer.weight.detach().numpy())
    conv_layer = nnx.Conv(4, 4, (3, 3), padding="VALID", rngs=nnx.Rngs(0))
    tc.load_torch_weights(conv_layer, conv)
    x = randn(1, 4, 5, 5)
    assert rel_err(conv_layer(channels_last(x)), channels_last(conv(torch.tensor(x)).detach())) < RTOL


# -------------------------------------------------------------------------------- sharding


def test_kernel_metadata_shards_the_output_channels():
    """A kernel annotated ("model",) on its output axis is sharded so, built concretely or abstractly and loaded."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from flax import nnx
        import transconv_jax as tc
        import transconv_jax.nnx as tcn
        mesh = jax.make_mesh((8,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
        with jax.set_mesh(mesh):
            layer = tcn.ConvTranspose(4, 8, (3, 3), 2, rngs=nnx.Rngs(0),
                kernel_metadata={"sharding_names": (None, None, None, "model")},
                bias_metadata={"sharding_names": ("model",)})
            y = nnx.jit(lambda m, x: m(x))(layer, jnp.ones((2, 5, 5, 4)))
            print(tuple(layer.kernel[...].sharding.spec), tuple(layer.bias[...].sharding.spec), y.shape)
            abstract = nnx.eval_shape(lambda: tcn.ConvTranspose2d(4, 8, 3, 2, rngs=nnx.Rngs(0),
                kernel_metadata={"sharding_names": (None, None, None, "model")}))
            tc.load_torch_state_dict(abstract, tc.torch_state_dict(layer))
            kernel = abstract.kernel[...]
            print(tuple(kernel.sharding.spec), len(kernel.sharding.device_set), bool((kernel == layer.kernel[...]).all()))
    """)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "(None, None, None, 'model') ('model',) (2, 11, 11, 8)"
    assert lines[1] == "(None, None, None, 'model') 8 True"  # loaded into an abstract model, sharded as annotated


def test_bfloat16_and_jax_values_load_as_they_are():
    """bfloat16 torch tensors stay bfloat16 (no float32 detour that rounds twice); jax arrays load too."""
    torch.manual_seed(0)
    module = nn.ConvTranspose1d(2, 4, 3, stride=2).to(torch.bfloat16)
    layer = nnx.eval_shape(lambda: tcn.ConvTranspose1d(2, 4, 3, 2, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    tc.load_torch_state_dict(layer, module.state_dict())
    assert layer.kernel[...].dtype == jnp.bfloat16
    expected = np.moveaxis(module.weight.detach().float().numpy(), (0, 1), (-2, -1))
    np.testing.assert_array_equal(np.asarray(layer.kernel[...], np.float32), expected)
    as_jax = {k: jnp.asarray(v.float().numpy()) for k, v in module.state_dict().items()}
    tc.load_torch_state_dict(layer, as_jax)
    np.testing.assert_array_equal(np.asarray(layer.kernel[...], np.float32), expected)
