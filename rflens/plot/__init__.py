"""Pictures of receptive fields, drawn from the engine's exact masks.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, no
display needed); ``save`` writes one atomically (PNG, SVG or PDF by extension).  The modules, by
subject (everything is importable from ``rflens.plot``):

- ``common``: the shared colours (``MASK_RGB``, ``BOX_RGB``, ``HEAT_BOX_RGB``, ...), ``save``
  and ``to_png``.
- ``fields``: theoretical RFs. ``unit_figure`` (a unit on the input beside its layer's grid),
  ``grid_figure`` (a unit across layers), ``growth_figure`` (RF size against depth, several
  models), ``overlay_figure`` (boxes on a photograph), ``draw_field``, ``select_layers``,
  ``main_path``.
- ``gradients``: gradient and effective RFs. ``gradient_figure``, ``gradient_categories`` and
  ``CATEGORIES``, ``erf_figure``, ``erf_comparison_figure``.
- ``empirical``: empirical RFs (Zhou et al. 2015) and segmentations. ``empirical_figure``,
  ``empirical_grid_figure``, ``empirical_view``, ``centred_square``, ``segment_sheet``,
  ``mask_outline``, ``dimmed``.

The result objects' ``plot``/``plot_grid``/``_repr_png_`` methods only call the function of the
same name here, where their checks live: ``unit_plot``, ``unit_png``, ``analysis_plot``,
``analysis_plot_grid`` (in ``fields``), ``erf_png`` (``gradients``), ``empirical_layer_plot``
(``empirical``); ``GradientField.plot`` and ``EffectiveField.plot`` are ``gradient_figure`` and
``erf_figure``.

>>> import tempfile, torch.nn as nn, rflens
>>> from rflens.plot import save, unit_figure
>>> layer = rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, 5), nn.AvgPool2d(2)), (1, 30, 30))["1"]
>>> save(unit_figure(layer, layer.unit((4, 5))), tempfile.mkdtemp() + "/unit.png").name
'unit.png'
"""

from __future__ import annotations

from .common import (BOX_RGB, HEAT_BOX_RGB, HEAT_CMAP, HEAT_PROJECTED, LAYER_COLOURS, MASK_ALPHA, MASK_RGB,
                     UNCLIPPED_RGB, UNIT_RGB, save, to_png)
from .empirical import (DIM, EMPIRICAL_RGB, SEGMENT_RGB, centred_square, cut_maps, dimmed, empirical_figure,
                        empirical_grid_figure, empirical_layer_plot, empirical_view, mask_outline, segment_sheet)
from .fields import (analysis_plot, analysis_plot_grid, draw_field, grid_figure, growth_figure, main_path,
                     overlay_figure, select_layers, unit_figure, unit_plot, unit_png)
from .gradients import (CATEGORIES, GAUSS_RGB, GRAD_LOG_FLOOR, LOG_FLOOR, SCALES, erf_comparison_figure, erf_figure,
                        erf_png, gradient_categories, gradient_figure)

__all__ = [
    "BOX_RGB", "CATEGORIES", "DIM", "EMPIRICAL_RGB", "GAUSS_RGB", "GRAD_LOG_FLOOR", "HEAT_BOX_RGB", "HEAT_CMAP",
    "HEAT_PROJECTED", "LAYER_COLOURS", "LOG_FLOOR", "MASK_ALPHA", "MASK_RGB", "SCALES", "SEGMENT_RGB",
    "UNCLIPPED_RGB", "UNIT_RGB",
    "analysis_plot", "analysis_plot_grid", "centred_square", "cut_maps", "dimmed", "draw_field", "empirical_figure",
    "empirical_grid_figure", "empirical_layer_plot", "empirical_view", "erf_comparison_figure", "erf_figure",
    "erf_png", "gradient_categories", "gradient_figure", "grid_figure", "growth_figure", "main_path",
    "mask_outline", "overlay_figure", "save", "segment_sheet", "select_layers", "to_png", "unit_figure",
    "unit_plot", "unit_png",
]
