"""Quantized models are analysed through their float twin: the quantized model's own layer
names, the geometry of the float model it was quantized from, and the gradient oracle's masks.

The twelve torchvision builders are marked ``slow`` but for three; every quantized module class
rflens has a twin for is checked here against the quantized module's own output."""

from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.nn.intrinsic import quantized as nniq
from torch.ao.nn.intrinsic.quantized import dynamic as nniqd
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.nn.quantized import reference as nnqr
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx

import rflens
from conftest import assert_exact
from rflens.cli import main
from rflens.engine.quantized import TWINS, float_twin, is_quantized
from rflens.engine.trace import fx_graph
from rflens.errors import RFLensError
from rflens.models import load_model
from rflens.models.names import default_input_size

pytestmark = [pytest.mark.filterwarnings("ignore:.*(quantize_per_tensor|must run observer|reduce_range|poor numerical accuracy).*:UserWarning"),
              pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")]

# the last local layer of each builder, as its float builder has it (at its default input size)
BUILDERS = {
    "quantized_googlenet": ("inception5b", 379, 32),
    "quantized_inception_v3": ("Mixed_7c", 1311, 32),
    "quantized_mobilenet_v2": ("features", 491, 32),
    "quantized_mobilenet_v3_large": ("features.4.block.1", 35, 8),
    "quantized_resnet18": ("layer4", 435, 32),
    "quantized_resnet50": ("layer4", 427, 32),
    "quantized_resnext101_32x8d": ("layer4", 971, 32),
    "quantized_resnext101_64x4d": ("layer4", 971, 32),
    "quantized_shufflenet_v2_x0_5": ("conv5", 527, 32),
    "quantized_shufflenet_v2_x1_0": ("conv5", 527, 32),
    "quantized_shufflenet_v2_x1_5": ("conv5", 527, 32),
    "quantized_shufflenet_v2_x2_0": ("conv5", 527, 32),
}
QUICK = ("quantized_resnet18", "quantized_shufflenet_v2_x0_5", "quantized_mobilenet_v3_large")


def fx_names(model: nn.Module) -> list[str]:
    """The names rflens gives a model's FX nodes and module outputs."""
    _, nodes, modules = fx_graph(model)
    return list(nodes.values()) + [name for name, _ in modules]


def test_the_list_is_torchvisions_list_of_quantized_builders():
    assert sorted(BUILDERS) == torchvision.models.list_models(module=torchvision.models.quantization)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in QUICK else pytest.mark.slow) for n in BUILDERS])
def test_a_quantized_builder_keeps_its_layer_names_and_has_its_float_builders_geometry(name):
    q = load_model(name)
    assert is_quantized(q)
    assert fx_names(float_twin(q)) == fx_names(q)  # the names are the quantized model's own
    size = default_input_size(name)
    a = rflens.analyze(q, size)
    layer, rf, stride = BUILDERS[name]
    assert (a[layer].rf_size, a[layer].stride) == ((rf, rf), (stride, stride))
    assert a["quant"].op == "Quantize" and a["quant"].rf_size == (1, 1)
    float_model = rflens.analyze(load_model(name.replace("quantized_", "")), size)
    common = [n for n in a.layers if n in float_model.layers]
    assert len(common) > 0.6 * len(a.layers)  # the rest: quant, dequant, add_relu (fused) ...
    assert [(n, a[n].rf_size, a[n].stride) for n in common] == \
        [(n, float_model[n].rf_size, float_model[n].stride) for n in common]


def test_quantized_resnet18_matches_the_gradient_oracle():
    a = assert_exact(load_model("quantized_resnet18"), (3, 64, 64), max_layers=8)
    assert a["conv1"].op == "ConvReLU2d"
    assert a["layer1.0.add_relu"].rf_size == (27, 27)     # QFunctional.add_relu, as a node


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quantized_shufflenet_v2_x0_5", "quantized_mobilenet_v3_large",
                                  "quantized_googlenet", "quantized_mobilenet_v2"])
def test_quantized_builders_match_the_gradient_oracle(name):
    assert_exact(load_model(name), (3, 96, 96), max_layers=10)


# -- FX graph mode quantization ------------------------------------------------------------------

class SmallNet(nn.Module):
    """Conv+ReLU (fused), a residual add+ReLU, a cat, max pooling, conv+BN (folded), a functional
    convolution and a functional linear layer (packed weights in the graph), global pooling and
    a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 4, 5, groups=2)
        self.bn = nn.BatchNorm2d(4)
        self.w = nn.Parameter(torch.randn(4, 4, 3, 3) * 0.1)
        self.b = nn.Parameter(torch.zeros(4))
        self.fc = nn.Linear(4, 10)
        self.w2, self.b2 = nn.Parameter(torch.randn(3, 10) * 0.1), nn.Parameter(torch.zeros(3))

    def forward(self, x):
        x = self.relu(self.conv1(x))
        y = self.conv2(x)
        x = torch.cat([F.relu(x + y), y], 1)
        x = self.bn(self.conv3(self.pool(x)))
        x = F.conv2d(x, self.w, self.b, [2, 2], [1, 1], [1, 1], 1)  # convert_fx wants lists here
        return F.linear(self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1)), self.w2, self.b2)


def fx_quantized(convert=convert_fx):
    torch.manual_seed(0)
    model = SmallNet().eval()
    calibration = torch.randn(8, 3, 48, 48)
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (calibration,))
    prepared(calibration)
    return model, convert(prepared)


def test_an_fx_quantized_conv_net_has_its_float_models_geometry_and_matches_the_gradient_oracle():
    model, q = fx_quantized()
    assert fx_names(float_twin(q)) == fx_names(q)
    a = assert_exact(q, (3, 48, 48))
    fields = {n: (a[n].rf_size[0], a[n].stride[0]) for n in a.layers}
    assert fields == {"x": (1, 1), "quantize_per_tensor": (1, 1), "conv1": (3, 2), "conv2": (11, 2),
                      "add_relu": (11, 2), "cat": (11, 2), "pool": (13, 4), "conv3": (29, 4), "conv2d": (37, 8),
                      "adaptive_avg_pool2d": (61, 32), "dequantize": (61, 32), "flatten": (61, 32),
                      "quantize_per_tensor_1": (61, 32), "fc": (61, 32), "linear": (61, 32), "dequantize_1": (61, 32),
                      "output": (61, 32)}
    float_fields = rflens.analyze(model, (3, 48, 48))
    assert all(fields[n] == (float_fields[n].rf_size[0], float_fields[n].stride[0])
               for n in fields if n in float_fields.layers)


def test_the_float_twin_computes_what_the_quantized_model_computes():
    model, q = fx_quantized()
    x = torch.randn(2, 3, 48, 48)
    out = q(x)
    assert (float_twin(q)(x) - out).abs().max() < 0.1 * out.abs().max()   # quantization error only
    assert not is_quantized(float_twin(q)) and is_quantized(q)             # q itself is untouched


def test_a_reference_quantized_fx_model_matches_the_gradient_oracle():
    _, q = fx_quantized(convert_to_reference_fx)
    assert fx_names(float_twin(q)) == fx_names(q)
    a = assert_exact(q, (3, 48, 48), max_layers=12)
    assert (a["conv2d"].rf_size, a["fc"].rf_size) == ((37, 37), (61, 61))


def test_a_dynamically_quantized_model_is_analysed():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.Linear(4 * 7 * 7, 5))
    q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear})
    assert type(q[2]) is nnqd.Linear
    a = assert_exact(q, (3, 16, 16))
    assert a["2"].rf_size == (15, 15) and a["2"].is_global   # 7x7 windows of 3, step 2: pixels 0..14


def test_a_model_with_nothing_quantized_is_its_own_twin():
    model = torchvision.models.resnet18()
    assert float_twin(model) is model


# -- every twin against its quantized module -----------------------------------------------------

S, Z = 0.05, 128  # quint8 over [-6.4, 6.35] in steps of 0.05


def packed(m: nn.Module) -> nn.Module:
    """A quantized conv or linear module with small random weights and a wide output range."""
    w = m.weight()
    m.set_weight_bias(torch.quantize_per_tensor(torch.randn(w.shape) * 0.2, 0.02, 0, torch.qint8),
                      torch.randn(m.bias().shape) * 0.1)
    m.scale, m.zero_point = S, Z
    return m


def normed(m: nn.Module) -> nn.Module:
    with torch.no_grad():
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 1.5)
    m.scale, m.zero_point = torch.tensor(S), torch.tensor(Z)
    return m


def affine(n: int) -> tuple[nn.Parameter, nn.Parameter]:
    return nn.Parameter(torch.rand(n) + 0.5), nn.Parameter(torch.rand(n) - 0.5)


class Applied(nn.Module):
    """Calls a module with its input twice (ConvAdd's extra input) or a QFunctional's ops."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x):
        if hasattr(self.m, "add_relu"):  # a QFunctional, or its twin
            f = self.m
            y = f.add_relu(f.add(x, x), f.mul_scalar(x, 2.0))
            return f.cat([f.mul(y, x), f.add_scalar(x, 0.5)], dim=1)
        return self.m(x, x[:, :, 1:-1, 1:-1])


@contextlib.contextmanager
def engine(name: str):
    saved = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = saved


class Example(NamedTuple):
    build: Callable[[], nn.Module]
    size: tuple[int, ...]
    quantized_input: bool = True   # False: dynamic and reference modules take float input
    # fbgemm computes every op as its float definition (x86's transposed convolutions mix the
    # weights of other channels, with the same geometry); oneDNN alone has conv+add, linear+tanh
    engine: str = "fbgemm"


EXAMPLES = {
    nnq.Conv1d: Example(lambda: packed(nnq.Conv1d(3, 4, 3, stride=2, padding=1)), (3, 16)),
    nnq.Conv2d: Example(lambda: packed(nnq.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2)), (3, 12, 12)),
    nnq.Conv3d: Example(lambda: packed(nnq.Conv3d(3, 4, 3, stride=(1, 2, 2))), (3, 5, 8, 8)),
    nnq.ConvTranspose1d: Example(lambda: packed(nnq.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1)), (3, 8)),
    nnq.ConvTranspose2d: Example(lambda: packed(nnq.ConvTranspose2d(3, 4, 3, stride=2, groups=1)), (3, 6, 6)),
    nnq.ConvTranspose3d: Example(lambda: packed(nnq.ConvTranspose3d(3, 4, 2, stride=2)), (3, 3, 4, 4)),
    nniq.ConvReLU1d: Example(lambda: packed(nniq.ConvReLU1d(3, 4, 3)), (3, 16)),
    nniq.ConvReLU2d: Example(lambda: packed(nniq.ConvReLU2d(3, 4, 3, padding=1, padding_mode="reflect")), (3, 8, 8)),
    nniq.ConvReLU3d: Example(lambda: packed(nniq.ConvReLU3d(3, 4, 3)), (3, 5, 6, 6)),
    nnq.Linear: Example(lambda: packed(nnq.Linear(8, 4)), (3, 8)),
    nniq.LinearReLU: Example(lambda: packed(nniq.LinearReLU(8, 4)), (3, 8)),
    nnq.BatchNorm2d: Example(lambda: normed(nnq.BatchNorm2d(3)), (3, 6, 6)),
    nnq.BatchNorm3d: Example(lambda: normed(nnq.BatchNorm3d(3)), (3, 4, 6, 6)),
    nniq.BNReLU2d: Example(lambda: normed(nniq.BNReLU2d(3)), (3, 6, 6)),
    nniq.BNReLU3d: Example(lambda: normed(nniq.BNReLU3d(3)), (3, 4, 6, 6)),
    nnq.LayerNorm: Example(lambda: nnq.LayerNorm([6], *affine(6), S, Z), (3, 5, 6)),
    nnq.GroupNorm: Example(lambda: nnq.GroupNorm(3, 6, *affine(6), S, Z), (6, 5, 5)),
    nnq.InstanceNorm1d: Example(lambda: nnq.InstanceNorm1d(3, *affine(3), S, Z, affine=True), (3, 9)),
    nnq.InstanceNorm2d: Example(lambda: nnq.InstanceNorm2d(3, *affine(3), S, Z, affine=True), (3, 5, 5)),
    nnq.InstanceNorm3d: Example(lambda: nnq.InstanceNorm3d(3, *affine(3), S, Z, affine=True), (3, 3, 4, 4)),
    nnq.Hardswish: Example(lambda: nnq.Hardswish(S, Z), (3, 5, 5)),
    nnq.ELU: Example(lambda: nnq.ELU(S, Z, 0.5), (3, 5, 5)),
    nnq.LeakyReLU: Example(lambda: nnq.LeakyReLU(S, Z, 0.1), (3, 5, 5)),
    nnq.Sigmoid: Example(lambda: nnq.Sigmoid(1 / 256, 0), (3, 5, 5)),
    nnq.Softmax: Example(lambda: nnq.Softmax(dim=1, scale=1 / 256, zero_point=0), (3, 5, 5)),
    nnq.ReLU6: Example(lambda: nnq.ReLU6(), (3, 5, 5)),
    nnq.Dropout: Example(lambda: nnq.Dropout(0.5), (3, 5, 5)),
    nnq.PReLU: Example(lambda: nnq.PReLU(S, Z, 3), (3, 5, 5)),
    nnq.Quantize: Example(lambda: nn.Identity(), (3, 5, 5)),      # the wrapper's own first and last modules
    nnq.DeQuantize: Example(lambda: nn.Identity(), (3, 5, 5)),
    nnq.QFunctional: Example(lambda: Applied(functional()), (3, 5, 5)),
    nnqd.Linear: Example(lambda: packed(nnqd.Linear(8, 4)), (3, 8), False),
    nniqd.LinearReLU: Example(lambda: packed(nniqd.LinearReLU(8, 4)), (3, 8), False),
    nnqd.Conv1d: Example(lambda: packed(nnqd.Conv1d(3, 4, 3, stride=2)), (3, 16), False),
    nnqd.Conv2d: Example(lambda: packed(nnqd.Conv2d(3, 4, 3, padding=1)), (3, 8, 8), False),
    nnqd.Conv3d: Example(lambda: packed(nnqd.Conv3d(3, 4, 3)), (3, 5, 5, 5), False),
    nnqd.ConvTranspose1d: Example(lambda: packed(nnqd.ConvTranspose1d(3, 4, 3, stride=2)), (3, 8), False),
    nnqd.ConvTranspose2d: Example(lambda: packed(nnqd.ConvTranspose2d(3, 4, 3, stride=2)), (3, 5, 5), False),
    nnqd.ConvTranspose3d: Example(lambda: packed(nnqd.ConvTranspose3d(3, 4, 2, stride=2)), (3, 3, 3, 3), False),
    nnqr.Conv1d: Example(lambda: nnqr.Conv1d(3, 4, 3, stride=2), (3, 16), False),
    nnqr.Conv2d: Example(lambda: nnqr.Conv2d(3, 4, 3, dilation=2), (3, 9, 9), False),
    nnqr.Conv3d: Example(lambda: nnqr.Conv3d(3, 4, 3), (3, 5, 5, 5), False),
    nnqr.ConvTranspose1d: Example(lambda: nnqr.ConvTranspose1d(3, 4, 3, stride=2), (3, 8), False),
    nnqr.ConvTranspose2d: Example(lambda: nnqr.ConvTranspose2d(3, 4, 3, stride=2, padding=1), (3, 5, 5), False),
    nnqr.ConvTranspose3d: Example(lambda: nnqr.ConvTranspose3d(3, 4, 2, stride=2), (3, 3, 3, 3), False),
    nnqr.Linear: Example(lambda: nnqr.Linear(8, 4), (3, 8), False),
    nniq.ConvAdd2d: Example(lambda: Applied(packed(nniq.ConvAdd2d(3, 3, 3))), (3, 8, 8), True, "onednn"),
    nniq.ConvAddReLU2d: Example(lambda: Applied(packed(nniq.ConvAddReLU2d(3, 3, 3))), (3, 8, 8), True, "onednn"),
    nniq.LinearLeakyReLU: Example(lambda: packed(nniq.LinearLeakyReLU(8, 4, 0.1)), (3, 8), True, "onednn"),
    nniq.LinearTanh: Example(lambda: packed(nniq.LinearTanh(8, 4)), (3, 8), True, "onednn"),
}


def functional() -> nnq.QFunctional:
    f = nnq.QFunctional()
    f.scale, f.zero_point = S, Z
    return f


def test_every_twin_has_an_example():
    assert set(EXAMPLES) == set(TWINS)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: f"{c.__module__.split('.')[-3]}.{c.__name__}")
def test_a_twin_computes_what_its_quantized_module_computes_and_matches_the_gradient_oracle(cls):
    build, size, quantized_input, backend = EXAMPLES[cls]
    torch.manual_seed(0)
    with engine(backend):
        m = build()
        model = (nn.Sequential(nnq.Quantize(S, Z, torch.quint8), m, nnq.DeQuantize()) if quantized_input
                 else nn.Sequential(m)).eval()
        x = torch.randint(-10, 11, (2, *size)) * S        # on the quantization grid: quantize is exact
        twin = float_twin(model)
        got, want = twin(x), model(x)
    assert got.shape == want.shape
    # half a quantization step (the output's rounding), where the quantized output does not
    # saturate (a float twin has no range; dynamic convolutions clip to their input's range)
    inside = (want > want.min()) & (want < want.max())
    assert (got - want)[inside].abs().max() <= S / 2 + 1e-4
    assert not is_quantized(twin)
    assert_exact(model, size)


# -- refusals, and the CLI ---------------------------------------------------------------------

# a quantized module without a twin: tests/test_bad_input.py

def test_a_quantized_op_without_a_twin_in_an_fx_graph_is_refused_by_name():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    q = graph.call_function(torch.quantize_per_tensor, (x, 0.1, 0, torch.quint8))
    y = graph.call_function(torch.ops.quantized.embedding_byte, (q, x))  # packed weights, indices
    graph.output(graph.call_method("dequantize", (y,)))
    model = torch.fx.GraphModule(nn.Module(), graph)
    with pytest.raises(RFLensError, match=r"node 'embedding_byte' .* calls the quantized op 'quantized.embedding_byte'"):
        rflens.analyze(model, (3, 8, 8))


def test_the_cli_names_torchvisions_quantized_builders(capsys):
    assert main(["table", "quantized_resnet18", "--format", "csv"]) == 0
    rows = {r.split(",")[0]: r.split(",") for r in capsys.readouterr().out.splitlines()}
    assert rows["conv1"][1:5] == ["ConvReLU2d", "1x64x112x112", "7", "2"]
    assert rows["layer4"][1:5] == ["Sequential", "1x512x7x7", "435", "32"]


def test_a_quantized_builder_is_quantized_unless_told_otherwise():
    assert isinstance(load_model("quantized_shufflenet_v2_x0_5").conv1[0], nniq.ConvReLU2d)
    float_model = load_model("quantized_shufflenet_v2_x0_5", {"quantize": False})
    assert not is_quantized(float_model) and isinstance(float_model.conv1[0], nn.Conv2d)


def test_gradients_of_a_quantized_model_are_refused_with_the_way_to_its_float_twin():
    q = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)))
    with pytest.raises(rflens.RFLensError, match=r"quantized ops have no gradient: .*float_twin\(model\)"):
        rflens.gradient_field(q, "0", (0, 0), input_size=(1, 4, 4), device="cpu")
