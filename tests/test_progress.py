"""progress= of the long calls: silent in scripts, a bar in notebooks (tqdm's widget in a real
Jupyter kernel), a tqdm bar on request, a function as before; and the CLI's bars give a rate."""

from __future__ import annotations

import os
import sys

import pytest
import torch

import rflens
from rflens.errors import RFLensError


def _tiny():
    torch.manual_seed(0)
    return torch.nn.Conv2d(1, 2, 3), torch.rand(6, 1, 8, 8)


def test_a_script_is_silent_by_default_and_a_function_gets_every_batch(capsys):
    net, x = _tiny()
    rflens.top_images(net, "output", x, k=3, device="cpu", batch_size=2)
    assert capsys.readouterr() == ("", "")  # the library never prints
    calls = []
    rflens.top_images(net, "output", x, k=3, device="cpu", batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 6), (4, 6), (6, 6)]
    erf_calls = []
    rflens.effective_field(net, "output", inputs=5, input_size=(1, 8, 8), batch_size=2, device="cpu",
                           progress=lambda d, t: erf_calls.append((d, t)))
    assert erf_calls == [(2, 5), (4, 5), (5, 5)]


def test_progress_true_draws_a_tqdm_bar_on_stderr_and_false_draws_nothing(capsys):
    pytest.importorskip("tqdm", reason="progress=True draws a tqdm bar")
    net, x = _tiny()
    rflens.top_images(net, "output", x, k=3, device="cpu", batch_size=2, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "scanning output" in err and "6/6" in err and "image/s" in err
    segments = rflens.segment(net, "output", 1, x, k=2, device="cpu", progress=True)
    assert len(segments) == 2 and "segmenting channel 1" in capsys.readouterr().err
    rflens.empirical_field(net, "output", [0], x, k=2, occluder=rflens.Occluder(3, 2), device="cpu", progress=False)
    assert capsys.readouterr() == ("", "")


def test_a_progress_that_is_neither_a_flag_nor_a_function_is_refused():
    net, x = _tiny()
    with pytest.raises(RFLensError, match="progress must be None .* not 'yes'"):
        rflens.top_images(net, "output", x, k=3, device="cpu", progress="yes")


def test_a_notebook_shows_a_tqdm_widget_by_default_and_none_with_progress_false():
    """In a real Jupyter kernel (as JupyterLab and VS Code run one), the scan displays tqdm's
    notebook widget without being asked; progress=False displays nothing."""
    manager = pytest.importorskip("jupyter_client.manager", reason="the notebook test needs jupyter_client")
    pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel")
    pytest.importorskip("ipywidgets", reason="the notebook bar needs ipywidgets")
    pytest.importorskip("tqdm", reason="the notebook bar is tqdm's")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    km, kc = manager.start_new_kernel(kernel_name="python3", env=env)
    try:
        def widgets(code: str) -> list[dict]:
            msg_id = kc.execute(code)
            shown = []
            while True:
                msg = kc.get_iopub_msg(timeout=120)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                assert kind != "error", content
                if kind == "display_data":
                    shown.append(content["data"])
                if kind == "status" and content["execution_state"] == "idle":
                    return shown
        setup = ("import torch, rflens\ntorch.manual_seed(0)\nnet = torch.nn.Conv2d(1, 2, 3)\n"
                 "x = torch.rand(6, 1, 8, 8)\n")
        assert widgets(setup) == []
        shown = widgets("scan = rflens.top_images(net, 'output', x, k=3, device='cpu', batch_size=2)")
        assert [d for d in shown if "application/vnd.jupyter.widget-view+json" in d], shown
        assert any("scanning output" in d.get("text/plain", "") for d in shown), shown
        assert widgets("scan = rflens.top_images(net, 'output', x, k=3, device='cpu', progress=False)") == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_cli_bars_give_the_rate_and_the_time_left():
    from rflens.cli.common import progress, tracker
    bars = progress()
    update = tracker(bars, "scanning", total=10, unit="image")
    task = bars.tasks[0]
    for done in range(1, 6):
        update(done, 10)
    columns = [str(c.render(task)) for c in bars.columns[2:]]
    assert columns[0].strip() == "5/10" and columns[3] == "ETA"
    assert columns[1] == f"{task.speed:.1f} image/s" if task.speed >= 1 else f"{1 / task.speed:.1f} s/image"
