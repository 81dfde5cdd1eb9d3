"""Ops the analytic engine refuses, with the reason: it never guesses."""

from __future__ import annotations



from .registry import Op, rule


@rule
def data_dependent(op: Op):
    raise op.fail("which elements it reads depends on tensor values")


@rule
def patches(op: Op):
    raise op.fail("patch extraction (unfold/fold) is not followed by the analytic engine yet")



@rule
def unsupported_resampling(op: Op):
    raise op.fail("its sampling positions are not followed by rflens yet")
