"""Ops the analytic engine refuses, with the reason: it never guesses."""

from __future__ import annotations



from .registry import Op, rule


@rule("index", "_unsafe_index", "index_select", "gather", "take_along_dim", "index_put", "index_put_",
      "scatter", "scatter_", "scatter_add", "masked_select", "masked_scatter", "nonzero", "_local_scalar_dense",
      "item", "sort", "topk", "argsort", "kthvalue", "unique", "_unique2")
def data_dependent(op: Op):
    raise op.fail("which elements it reads depends on tensor values")


@rule("im2col", "col2im", "unfold", "unfold_backward")
def patches(op: Op):
    raise op.fail("patch extraction (unfold/fold) is not followed by the analytic engine yet")



@rule("_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa", "grid_sampler_2d", "grid_sampler",
      "grid_sampler_3d", "affine_grid_generator")
def unsupported_resampling(op: Op):
    raise op.fail("its sampling positions are not followed by rflens yet")
