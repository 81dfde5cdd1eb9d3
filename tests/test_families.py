"""The op table (rflens.engine.families) is the one place an op is known: the analytic rules, the
gradient oracle's stand-ins, the gradient explainer and incremental re-inference all read it, and
every module class and function row in it behaves as its row says in all four."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_incremental import assert_matches_full_forward
from torch import nn

import rflens
from rflens.engine import families
from rflens.engine.families import BY_FUNCTION, TABLE, Entry, Gradient, Structure, functions, module_entry
from rflens.engine.ops import RULES
from rflens.engine.ops.registry import IMPLEMENTATIONS, build_rules, rule
from rflens.engine.standins import IDENTITY, REFUSED, STAND_INS
from rflens.errors import UnsupportedOpError
from rflens.methods.gradient import ACTIVATIONS, MAXIMA
from rflens.methods.incremental import Incremental

REFUSED_STRUCTURES = (Structure.VALUE_SELECTED, Structure.UNFOLLOWED)


# -- the table is complete and consistent -----------------------------------------------------

def test_every_aten_packet_of_the_table_has_its_rows_rule_and_no_rule_is_outside_the_table():
    assert set(RULES) == {name for row in TABLE for name in row.aten}
    for row in TABLE:
        for name in row.aten:
            assert RULES[name] is IMPLEMENTATIONS[row.rule], name
    assert len(RULES) == 383


def test_an_op_in_two_rows_or_a_rule_registered_twice_is_an_error():
    twice = TABLE + (Entry(Structure.POINTWISE, Gradient.PASSES, "elementwise", ("relu",), (), ()),)
    with pytest.raises(RuntimeError, match="aten op 'relu' is in two rows of the op table "
                                           r"\(rules 'passthrough' and 'elementwise'\)"):
        build_rules(twice, IMPLEMENTATIONS)
    with pytest.raises(RuntimeError, match="rule 'passthrough' is registered twice"):
        rule("passthrough")(lambda op: None)
    assert "passthrough" in IMPLEMENTATIONS and IMPLEMENTATIONS["passthrough"].__name__ == "passthrough"
    unknown = TABLE + (Entry(Structure.POINTWISE, Gradient.PASSES, "no_such_rule", ("not_an_op",), (), ()),)
    with pytest.raises(RuntimeError, match="names the rule 'no_such_rule'"):
        build_rules(unknown, IMPLEMENTATIONS)
    with pytest.raises(RuntimeError, match="rules no row of the op table uses: passthrough"):
        build_rules([row for row in TABLE if row.rule != "passthrough"], IMPLEMENTATIONS)


def test_a_name_is_in_one_row_only():
    for key in (lambda e: e.aten, lambda e: e.functions, lambda e: e.modules):
        names = [n for row in TABLE for n in key(row)]
        assert len(names) == len(set(names))


def test_the_probe_and_the_explainer_read_the_rows_of_their_gradient_families():
    pointwise = functions(Gradient.PASSES, Gradient.ZERO_DERIVATIVE, Gradient.CONSTANT, structure=Structure.POINTWISE)
    assert IDENTITY == pointwise - {"clone", "contiguous", "detach"}  # copies keep their memory layout
    assert {"relu", "relu_", "softshrink", "log_sigmoid", "dropout2d"} <= IDENTITY
    assert set(STAND_INS) == functions(Gradient.SIGNED, Gradient.MAX_ROUTING)
    assert REFUSED == {"nonzero", "item", "sort", "topk", "argsort", "kthvalue", "unique"}
    assert ACTIVATIONS == functions(Gradient.ZERO_DERIVATIVE)
    assert {"relu", "relu6", "hardtanh", "clamp", "clip", "threshold", "_threshold", "softshrink"} <= ACTIVATIONS
    assert MAXIMA == functions(Gradient.MAX_ROUTING) and {"max_pool2d", "amax", "maximum"} <= MAXIMA


def test_softshrink_hardshrink_and_logsigmoid_are_followed_by_analyze_as_by_the_probe(exact):
    # the probe handled them, analyze refused them: the bug one table prevents
    for act in (nn.Softshrink(), nn.Hardshrink(), nn.LogSigmoid()):
        a = exact(nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 4, 3)), (3, 12, 12), layers=["2"])
        assert a["2"].rf_size == (5, 5)


# -- every module and function row, through all four consumers --------------------------------

class Call(nn.Module):
    """A function of the table called in a forward, as models call them."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def sandwich(op: nn.Module, nd: int = 2, channels_out: int = 4) -> nn.Sequential:
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1]
    return nn.Sequential(conv(3, 4, 3), op, conv(channels_out, 4, 3))


MODULES: dict[type, tuple[nn.Module, int]] = {  # an instance and its spatial rank (2 unless said)
    nn.Sigmoid: (nn.Sigmoid(), 2), nn.Tanh: (nn.Tanh(), 2), nn.GELU: (nn.GELU(), 2), nn.SiLU: (nn.SiLU(), 2),
    nn.Mish: (nn.Mish(), 2), nn.ELU: (nn.ELU(), 2), nn.SELU: (nn.SELU(), 2), nn.CELU: (nn.CELU(), 2),
    nn.LeakyReLU: (nn.LeakyReLU(), 2), nn.RReLU: (nn.RReLU(), 2), nn.PReLU: (nn.PReLU(4), 2),
    nn.Softplus: (nn.Softplus(), 2), nn.LogSigmoid: (nn.LogSigmoid(), 2), nn.Softsign: (nn.Softsign(), 2),
    nn.Tanhshrink: (nn.Tanhshrink(), 2), nn.Dropout: (nn.Dropout(), 2), nn.Dropout1d: (nn.Dropout1d(), 1),
    nn.Dropout2d: (nn.Dropout2d(), 2), nn.Dropout3d: (nn.Dropout3d(), 3), nn.AlphaDropout: (nn.AlphaDropout(), 2),
    nn.FeatureAlphaDropout: (nn.FeatureAlphaDropout(), 2), nn.Identity: (nn.Identity(), 2),
    nn.ReLU: (nn.ReLU(), 2), nn.ReLU6: (nn.ReLU6(), 2), nn.Hardtanh: (nn.Hardtanh(), 2),
    nn.Hardsigmoid: (nn.Hardsigmoid(), 2), nn.Hardswish: (nn.Hardswish(), 2),
    nn.Threshold: (nn.Threshold(0.1, 0.0), 2), nn.Softshrink: (nn.Softshrink(), 2),
    nn.Hardshrink: (nn.Hardshrink(), 2), nn.LocalResponseNorm: (nn.LocalResponseNorm(2), 2),
    nn.BatchNorm1d: (nn.BatchNorm1d(4), 1), nn.BatchNorm2d: (nn.BatchNorm2d(4), 2),
    nn.BatchNorm3d: (nn.BatchNorm3d(4), 3),
    nn.Conv1d: (nn.Conv1d(4, 4, 3, padding=1), 1), nn.Conv2d: (nn.Conv2d(4, 4, 3, stride=2, padding=1), 2),
    nn.Conv3d: (nn.Conv3d(4, 4, 2), 3), nn.ConvTranspose1d: (nn.ConvTranspose1d(4, 4, 3, stride=2), 1),
    nn.ConvTranspose2d: (nn.ConvTranspose2d(4, 4, 3, stride=2), 2),
    nn.ConvTranspose3d: (nn.ConvTranspose3d(4, 4, 2), 3),
    nn.AvgPool1d: (nn.AvgPool1d(2), 1), nn.AvgPool2d: (nn.AvgPool2d(3, 2, padding=1), 2),
    nn.AvgPool3d: (nn.AvgPool3d(2), 3), nn.MaxPool1d: (nn.MaxPool1d(2), 1),
    nn.MaxPool2d: (nn.MaxPool2d(3, 2, ceil_mode=True), 2), nn.MaxPool3d: (nn.MaxPool3d(2), 3),
    nn.AdaptiveAvgPool1d: (nn.AdaptiveAvgPool1d(5), 1), nn.AdaptiveAvgPool2d: (nn.AdaptiveAvgPool2d(5), 2),
    nn.AdaptiveAvgPool3d: (nn.AdaptiveAvgPool3d(3), 3), nn.AdaptiveMaxPool1d: (nn.AdaptiveMaxPool1d(5), 1),
    nn.AdaptiveMaxPool2d: (nn.AdaptiveMaxPool2d(5), 2), nn.AdaptiveMaxPool3d: (nn.AdaptiveMaxPool3d(3), 3),
    nn.LPPool1d: (nn.LPPool1d(2, 2), 1), nn.LPPool2d: (nn.LPPool2d(2, 2), 2), nn.LPPool3d: (nn.LPPool3d(2, 2), 3),
    nn.Upsample: (nn.Upsample(scale_factor=2, mode="bilinear"), 2),
    nn.UpsamplingNearest2d: (nn.UpsamplingNearest2d(scale_factor=2), 2),
    nn.UpsamplingBilinear2d: (nn.UpsamplingBilinear2d(scale_factor=2), 2),
    nn.ZeroPad1d: (nn.ZeroPad1d(1), 1), nn.ZeroPad2d: (nn.ZeroPad2d((1, 2, 0, 1)), 2), nn.ZeroPad3d: (nn.ZeroPad3d(1), 3),
    nn.ConstantPad1d: (nn.ConstantPad1d(1, 0.5), 1), nn.ConstantPad2d: (nn.ConstantPad2d(1, 0.5), 2),
    nn.ConstantPad3d: (nn.ConstantPad3d(1, 0.5), 3), nn.ReflectionPad1d: (nn.ReflectionPad1d(2), 1),
    nn.ReflectionPad2d: (nn.ReflectionPad2d(2), 2), nn.ReflectionPad3d: (nn.ReflectionPad3d(1), 3),
    nn.ReplicationPad1d: (nn.ReplicationPad1d(2), 1), nn.ReplicationPad2d: (nn.ReplicationPad2d(2), 2),
    nn.ReplicationPad3d: (nn.ReplicationPad3d(1), 3), nn.CircularPad1d: (nn.CircularPad1d(2), 1),
    nn.CircularPad2d: (nn.CircularPad2d(2), 2), nn.CircularPad3d: (nn.CircularPad3d(1), 3),
    nn.Softmax: (nn.Softmax(dim=1), 2), nn.LogSoftmax: (nn.LogSoftmax(dim=-1), 2), nn.Softmin: (nn.Softmin(dim=2), 2),
    nn.Softmax2d: (nn.Softmax2d(), 2), nn.LayerNorm: (nn.LayerNorm([14, 14]), 2), nn.GroupNorm: (nn.GroupNorm(2, 4), 2),
    nn.InstanceNorm1d: (nn.InstanceNorm1d(4), 1), nn.InstanceNorm2d: (nn.InstanceNorm2d(4), 2),
    nn.InstanceNorm3d: (nn.InstanceNorm3d(4), 3), nn.RMSNorm: (nn.RMSNorm([14, 14]), 2),
    nn.Linear: (nn.Linear(14, 14), 2),
}
# modules that change the channel count or the rank: their own nets
SHAPED: dict[type, nn.Sequential] = {
    nn.Flatten: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2), nn.Unflatten(2, (14, 14)), nn.Conv2d(4, 4, 3)),
    nn.PixelShuffle: sandwich(nn.PixelShuffle(2), channels_out=1),
    nn.PixelUnshuffle: sandwich(nn.PixelUnshuffle(2), channels_out=16),
    nn.Unfold: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Unfold(2)),
    nn.Fold: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2), nn.Fold((14, 14), 1), nn.Conv2d(4, 4, 3)),
}
SHAPED[nn.Unflatten] = SHAPED[nn.Flatten]

FUNCTIONS = {  # one call per row that has torch functions but no module class
    "abs": torch.abs, "neg": lambda x: -x, "exp": torch.exp, "log": lambda x: torch.log(x.abs() + 1),
    "log1p": lambda x: torch.log1p(x.abs()), "sqrt": lambda x: torch.sqrt(x.abs()),
    "rsqrt": lambda x: torch.rsqrt(x.abs() + 1), "reciprocal": lambda x: torch.reciprocal(x.abs() + 1),
    "square": torch.square, "erf": torch.erf, "sin": torch.sin, "cos": torch.cos,
    "logit": lambda x: torch.logit(x.sigmoid()), "frac": torch.frac, "nan_to_num": torch.nan_to_num,
    "clamp": lambda x: x.clamp(-0.1, 0.1), "clamp_min": lambda x: x.clamp_min(0.1),
    "clamp_max": lambda x: torch.clamp_max(x, 0.1), "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,
    "trunc": torch.trunc, "sign": torch.sign, "sgn": torch.sgn,
    "add": lambda x: x + x.sigmoid(), "sub": lambda x: x - x.sigmoid(), "mul": lambda x: x * x.sigmoid(),
    "div": lambda x: x / (x.sigmoid() + 1), "pow": lambda x: x.pow(2), "eq": lambda x: x * (x > 0),
    "where": lambda x: torch.where(x > 0, x, x.sigmoid()), "masked_fill": lambda x: x.masked_fill(x > 0.5, 0.0),
    "maximum": lambda x: torch.maximum(x, x.sigmoid()), "permute": lambda x: x.permute(0, 1, 3, 2),
    "cat": lambda x: torch.cat([x, x.sigmoid()], 1),
    "var": lambda x: x - x.var(dim=(2, 3), keepdim=True), "amax": lambda x: x + x.amax(dim=-1, keepdim=True),
    "scaled_dot_product_attention": lambda x: F.scaled_dot_product_attention(x, x, x),
    "nonzero": lambda x: x + x.flatten(2).topk(1).values.unsqueeze(-1),   # the row of nonzero, sort, topk, ...
    "grid_sample": lambda x: F.grid_sample(x, torch.zeros(1, 14, 14, 2), align_corners=False),
}


def _rows_with_examples() -> list[tuple[str, Entry, nn.Module, tuple[int, ...]]]:
    cases = []
    for cls, row in families.BY_MODULE.items():
        if cls in SHAPED:
            cases.append((cls.__name__, row, SHAPED[cls], (3, 16, 16)))
        else:
            module, nd = MODULES[cls]
            cases.append((cls.__name__, row, sandwich(module, nd), (3,) + (16, 16, 16)[:nd]))
    for name, fn in FUNCTIONS.items():
        cases.append((name, BY_FUNCTION[name], sandwich(Call(fn), channels_out=8 if name == "cat" else 4), (3, 16, 16)))
    return cases


CASES = _rows_with_examples()


def test_every_module_and_every_function_row_has_an_example_here():
    assert set(families.BY_MODULE) == set(MODULES) | set(SHAPED)
    rows_without_modules = {row.functions[0] for row in TABLE if row.functions and not row.modules}
    assert rows_without_modules == set(FUNCTIONS)


def _incremental_supported(row: Entry, net: nn.Sequential, size) -> bool:
    if len(size) != 3:
        return False
    if row.structure in (Structure.POINTWISE, Structure.PER_POSITION, Structure.ELEMENTWISE) or row.rule == "cat":
        return True
    op = net[1]
    return type(op) in (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@pytest.mark.parametrize("name, row, net, size", CASES, ids=[c[0] for c in CASES])
def test_each_row_behaves_as_it_says_in_analyze_the_probe_and_incremental_inference(name, row, net, size, exact):
    net = net.eval()
    last = str(len(net) - 1)
    if row.structure in REFUSED_STRUCTURES:
        a = rflens.analyze(net, size)  # refused downstream of the op, followed before it
        assert a["0"].refused is None and a[last].refused is not None
        with pytest.raises(UnsupportedOpError, match="Use method='probe'"):
            a[last].unit()
        assert isinstance(Incremental.plan(net, last), str)
        return
    exact(net, size, layers=[last])   # the analytic masks equal the probe's
    plan = Incremental.plan(net, last)
    if _incremental_supported(row, net, size):
        torch.manual_seed(0)
        assert_matches_full_forward(net, last, 16, s=3, batch=4, changes=False)
    else:
        assert isinstance(plan, str), plan
        if len(size) == 3 and name in MODULES and not isinstance(net[1], Call):
            assert plan.startswith(f"'1' ({name})"), plan


FLAT_AT = {nn.ReLU: -1.0, nn.ReLU6: -1.0, nn.Hardtanh: -2.0, nn.Hardsigmoid: -4.0, nn.Hardswish: -4.0,
           nn.Threshold: -1.0, nn.Softshrink: 0.1, nn.Hardshrink: 0.1}


@pytest.mark.parametrize("cls", sorted(FLAT_AT, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_the_explainer_puts_a_flat_activations_missing_pixels_down_to_activations(cls):
    assert module_entry(cls).gradient is Gradient.ZERO_DERIVATIVE
    torch.manual_seed(0)
    net = sandwich(MODULES[cls][0]).eval()
    nn.init.constant_(net[0].bias, FLAT_AT[cls])  # a zero input puts every activation where it is flat
    g = rflens.gradient_field(net, "2", (5, 5), input_size=(3, 16, 16), device="cpu")
    assert g.nonzero.sum() == 0 and g.missed["activations"].sum() == g.rf.support_size == 25


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.AdaptiveMaxPool2d(7)], ids=lambda p: type(p).__name__)
def test_the_explainer_puts_max_routing_down_to_max(pool):
    assert module_entry(type(pool)).gradient is Gradient.MAX_ROUTING
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), pool, nn.Conv2d(4, 4, 1)).eval()
    g = rflens.gradient_field(net, "2", (3, 3), input_size=(3, 16, 16), device="cpu")
    # a constant map: each window routes its gradient to its first element only
    assert g.missed["max"].sum() == g.rf.support_size - g.nonzero.sum() > 0
    assert g.missed["other"].sum() == 0 and g.missed["activations"].sum() == 0


def test_module_rows_cover_subclasses_and_nothing_else():
    class MyConv(nn.Conv2d):
        pass
    assert module_entry(MyConv).rule == "convolution"
    assert module_entry(nn.Sequential) is None
    assert np.all([module_entry(cls) is row for cls, row in families.BY_MODULE.items()])


def test_the_oracle_runs_copies_as_they_are_so_a_view_after_contiguous_works(exact):
    """ShuffleNet's channel shuffle: view, transpose, contiguous(), view; an identity stand-in for
    contiguous() would keep the transposed strides and the last view would fail."""
    shuffle = Call(lambda x: x.view(x.shape[0], 2, 2, 14, 14).transpose(1, 2).contiguous().view(x.shape[0], 4, 14, 14))
    a = exact(sandwich(shuffle).eval(), (3, 16, 16), layers=["2"])
    assert a["2"].rf_size == (5, 5)
