"""One name, one meaning across the public API: a *unit* is a position on a layer's grid
(``"center"`` for the centre one), a *channel* is a channel, ``inputs=`` names the many inputs
a method runs on (``gradient_field`` takes exactly one, ``input=``).  The old keyword names
keep working for one release, with a DeprecationWarning that names the new one."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

import rflens
from rflens.deprecation import renamed
from rflens.engine.probe import ProbeLayer

from trained import lfw_faces, trained_onet, weights_file

needs_mtcnn = pytest.mark.skipif(weights_file() is None, reason="facenet-pytorch not installed (make setup)")
OCCLUDER = rflens.Occluder(5, 4)


@pytest.fixture(scope="module")
def onet():
    return trained_onet()


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(12)


def deprecated(call):
    """``call()``'s result and the DeprecationWarnings it gave, each checked to point at the
    caller's line in this file (not at rflens' wrapper)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    found = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert all(w.filename == __file__ for w in found), [w.filename for w in found]
    return result, [str(w.message) for w in found]


def silently(call):
    """``call()``, failing on any DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return call()


# -- a unit is a position; "center" is the centre unit -------------------------------------------

@needs_mtcnn
def test_center_and_none_mean_the_centre_unit_in_the_analytic_and_the_probe_layer(onet):
    layer = rflens.analyze(onet, (3, 48, 48))["pool2"]            # a 10x10 grid: centre (5, 5)
    assert layer.grid_shape == (10, 10)
    for same in ("center", "centre", None):
        assert layer.unit(same).index == layer.index(same) == (5, 5)
    assert layer.unit().index == (5, 5)                              # the default
    assert layer.unit("center").box == layer.unit((5, 5)).box == ((20, 33), (20, 33))
    probe = rflens.analyze(onet, (3, 48, 48), method="probe")["pool2"]
    assert isinstance(probe, ProbeLayer)
    assert probe.unit("center").index == probe.unit().index == probe.index(None) == (5, 5)
    assert probe.unit(unit="center").box == ((20, 33), (20, 33))


@needs_mtcnn
def test_gradient_and_effective_fields_take_center_or_none_for_the_centre_unit(onet, faces):
    by_default = rflens.gradient_field(onet, "pool2", input=faces[0], device="cpu")
    named = rflens.gradient_field(onet, "pool2", unit="center", input=faces[0], device="cpu")
    none = rflens.gradient_field(onet, "pool2", None, faces[0], device="cpu")
    assert by_default.unit == named.unit == none.unit == (5, 5)
    assert int(named.rf.mask.sum()) == 13 * 13
    np.testing.assert_array_equal(by_default.gradient, named.gradient)
    np.testing.assert_array_equal(none.gradient, named.gradient)
    center = rflens.effective_field(onet, "pool2", "center", inputs=faces[:4], device="cpu")
    none = rflens.effective_field(onet, "pool2", None, inputs=faces[:4], device="cpu")
    assert center.unit == none.unit == (5, 5) and center.rf_center == (26, 26) and center.count == 4
    np.testing.assert_array_equal(center.heat, none.heat)


def test_layer_plot_takes_center_for_the_centre_unit():
    import matplotlib.pyplot as plt
    layer = rflens.analyze(torch.nn.Conv2d(1, 1, 3), (1, 9, 9))["output"]
    fig = layer.plot(unit="center")
    try:
        assert isinstance(fig, plt.Figure)
    finally:
        plt.close(fig)


def test_a_unit_name_that_is_not_center_is_a_unit_error():
    layer = rflens.analyze(torch.nn.Conv2d(1, 1, 3), (1, 9, 9))["output"]
    with pytest.raises(rflens.UnitError, match=r"a unit is an index such as \(3, 4\) or \"center\", not 'middle'"):
        layer.unit("middle")


# -- the same argument names everywhere ----------------------------------------------------------

def parameters(func) -> list[str]:
    return list(inspect.signature(func).parameters)


def test_inputs_names_many_inputs_and_input_exactly_one():
    for many in (rflens.top_images, rflens.empirical_field, rflens.segment, rflens.effective_field):
        assert "inputs" in parameters(many) and "images" not in parameters(many), many.__name__
    assert "input" in parameters(rflens.gradient_field) and "inputs" not in parameters(rflens.gradient_field)


def test_unit_names_a_position_and_channel_a_channel():
    for takes_a_unit in (rflens.gradient_field, rflens.effective_field, rflens.Layer.unit, rflens.Layer.plot,
                         rflens.Layer.index, ProbeLayer.unit, ProbeLayer.index):
        assert "unit" in parameters(takes_a_unit), takes_a_unit.__qualname__
        assert inspect.signature(takes_a_unit).parameters["unit"].default in ("center", None)
    assert parameters(rflens.empirical_field)[2] == "channels"
    assert parameters(rflens.segment)[2] == "channel"
    for one_channel in (rflens.gradient_field, rflens.effective_field):
        assert "channel" in parameters(one_channel)


# -- old keyword names: still working, with a warning, for one release ---------------------------

@needs_mtcnn
def test_empirical_field_units_keyword_still_works_with_a_deprecation_warning(onet, faces):
    old, messages = deprecated(lambda: rflens.empirical_field(onet, "pool2", units=[3, 40], images=faces, k=2,
                                                              occluder=OCCLUDER, device="cpu"))
    assert messages == ["empirical_field: units= is deprecated, use channels= (they are channels)",
                        "empirical_field: images= is deprecated, use inputs="]
    new = silently(lambda: rflens.empirical_field(onet, "pool2", channels=[3, 40], inputs=faces, k=2,
                                                  occluder=OCCLUDER, device="cpu"))
    assert {c: f.size for c, f in old.fields.items()} == {c: f.size for c, f in new.fields.items()} == {3: 11, 40: 13}
    for c in (3, 40):
        np.testing.assert_array_equal(old.fields[c].heat, new.fields[c].heat)
    assert new.to_dict()["units"] == 2  # the JSON key stays as users parse it


@needs_mtcnn
def test_top_images_images_keyword_still_works_with_a_deprecation_warning(onet, faces):
    old, messages = deprecated(lambda: rflens.top_images(onet, "pool2", images=faces, k=3, device="cpu"))
    assert messages == ["top_images: images= is deprecated, use inputs="]
    new = silently(lambda: rflens.top_images(onet, "pool2", inputs=faces, k=3, device="cpu"))
    assert [t.index for t in old.top(3)] == [t.index for t in new.top(3)] == [11, 9, 2]
    np.testing.assert_array_equal(old.scores, new.scores)


@needs_mtcnn
def test_segment_images_keyword_still_works_with_a_deprecation_warning(onet, faces):
    old, messages = deprecated(lambda: rflens.segment(onet, "pool2", 3, images=faces, k=2, device="cpu"))
    assert messages == ["segment: images= is deprecated, use inputs="]
    new = silently(lambda: rflens.segment(onet, "pool2", 3, inputs=faces, k=2, device="cpu"))
    assert [(s.image.index, int(s.mask.sum())) for s in old] == [(s.image.index, int(s.mask.sum())) for s in new] \
        == [(11, 162), (9, 6)]


def test_layer_unit_index_keyword_still_works_with_a_deprecation_warning():
    layer = rflens.analyze(torch.nn.Conv2d(1, 1, 3), (1, 9, 9))["output"]
    old, messages = deprecated(lambda: layer.unit(index=(1, 2)))
    assert messages == ["Layer.unit: index= is deprecated, use unit="]
    assert old.box == silently(lambda: layer.unit(unit=(1, 2))).box == ((1, 4), (2, 5))


def test_giving_a_parameter_by_its_old_and_its_new_name_is_an_error(faces):
    net = torch.nn.Conv2d(3, 2, 3)
    with pytest.raises(rflens.RFLensError, match=r"empirical_field got both units= and channels=; units= is the "
                                                 r"old name of channels= \(they are channels\): give only channels="):
        rflens.empirical_field(net, "output", channels=[0], units=[1], inputs=faces)
    with pytest.raises(rflens.RFLensError, match="got both units= and channels="):  # the new one by position
        rflens.empirical_field(net, "output", [0], units=[1], inputs=faces)
    with pytest.raises(rflens.RFLensError, match="top_images got both images= and inputs="):
        rflens.top_images(net, "output", faces, images=faces)
    with pytest.raises(rflens.RFLensError, match="segment got both images= and inputs="):
        rflens.segment(net, "output", 0, inputs=faces, images=faces)
    layer = rflens.analyze(net, (3, 9, 9))["output"]
    with pytest.raises(rflens.RFLensError, match="Layer.unit got both index= and unit="):
        layer.unit((1, 1), index=(2, 2))


def test_a_rename_that_does_not_fit_the_function_fails_when_it_is_defined():
    with pytest.raises(TypeError, match=r"renamed\(images='inputs'\) does not fit .*count\('images',\): the new "
                                        r"name must be a parameter and the old one must not"):
        @renamed(images="inputs")
        def count(images=()):
            return len(images)
