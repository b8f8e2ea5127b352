"""interactive_figure: live controls, a PNG fallback, a text fallback, and redraws on change."""

import base64

import ipywidgets as W
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from course_utils.widgets import interactive_figure  # noqa: E402


def make_recorder():
    calls = []

    def make_figure(seed=0, show=True):
        calls.append((seed, show))
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, seed])
        return fig

    return make_figure, calls


def test_bundle_has_widget_png_and_text():
    make_figure, calls = make_recorder()
    obj = interactive_figure(make_figure, "demo", seed=W.IntSlider(value=2, min=0, max=5), show=W.Checkbox(value=True))
    bundle = obj._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(b"\x89PNG")
    assert "seed" in bundle["text/plain"] and "IntSlider(" not in bundle["text/plain"]
    assert calls == [(2, True)], "the figure at the defaults is drawn once, and reused for the fallback"


def test_moving_a_control_redraws():
    make_figure, calls = make_recorder()
    obj = interactive_figure(make_figure, seed=W.IntSlider(value=0, min=0, max=5))
    obj.widget.children[0].value = 4
    assert calls[-1] == (4, True)


def test_error_in_figure_surfaces():
    def broken(seed=0):
        raise ValueError("threshold must be positive")

    try:
        interactive_figure(broken, seed=W.IntSlider(value=0))
    except ValueError as err:
        assert "positive" in str(err)
    else:
        raise AssertionError("a failing figure function must raise its own error")


def test_static_mode_draws_the_same_picture_without_any_widget(monkeypatch):
    """COURSE_STATIC_WIDGETS=1 (set by ``make grade``): the PNG and the note of the live output, and no
    interactive widget -- with controls given as widgets and as ``interact`` abbreviations alike."""
    make_figure, calls = make_recorder()
    controls = {"seed": W.IntSlider(value=3, min=0, max=5), "show": False}
    live = interactive_figure(make_figure, "demo", **controls)._repr_mimebundle_()
    monkeypatch.setenv("COURSE_STATIC_WIDGETS", "1")
    opened = []
    monkeypatch.setattr(W.interactive, "__init__", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(AssertionError))
    obj = interactive_figure(make_figure, "demo", **controls)
    bundle = obj._repr_mimebundle_()
    assert set(bundle) == {"image/png", "text/plain"} and obj.widget is None and not opened
    assert bundle == {k: live[k] for k in ("image/png", "text/plain")}
    assert calls == [(3, False), (3, False)]


def test_progress_bars_are_plain_text_in_static_mode(monkeypatch):
    import tqdm.auto
    import tqdm.std

    from course_utils.data import progress_bar

    monkeypatch.delenv("COURSE_STATIC_WIDGETS", raising=False)
    assert type(progress_bar(range(3), disable=True)) is tqdm.auto.tqdm
    monkeypatch.setenv("COURSE_STATIC_WIDGETS", "1")
    bar = progress_bar(range(3), disable=True)
    assert type(bar) is tqdm.std.tqdm and list(bar) == [0, 1, 2]
