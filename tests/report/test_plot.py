"""Figures: the htab-mem grid reads well, every saved document replots, bad input fails in one line."""

from __future__ import annotations

import copy
import io
import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text

from bpfmem.cli import main
from bpfmem.report.plot import htab_mem_figure, plot_htab_mem
from bpfmem.report.replot import document_kind, figure_for, parse_document, replot

POLICIES = ["v6.1", "v6.2", "v6.6", "free_rcu", "prealloc", "kmalloc_rcu"]
USE_CASES = ["overwrite", "batch_add_batch_del", "add_del_on_diff_cpu"]
SHORT = ["--cpus", "2", "--duration", "0.02", "--idle", "0.02"]
PNG = b"\x89PNG\r\n\x1a\n"

_docs: dict[tuple[str, ...], dict[str, Any]] = {}


def cli_doc(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """The JSON document of a short ``bpfmem ... --json`` model run (run once per argument list)."""
    if args not in _docs:
        capsys.readouterr()
        assert main([*args, "--json"]) == 0
        _docs[args] = json.loads(capsys.readouterr().out)
    return copy.deepcopy(_docs[args])


def grid_doc(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return cli_doc(capsys, "bench", "htab-mem", "--policy", "all", "--use-case", "all", *SHORT)


def drawn(fig: Figure) -> Any:
    """Lay the figure out and draw it; returns the renderer to measure artists with."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


_grid: dict[str, Any] = {}


def grid_figure(capsys: pytest.CaptureFixture[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Figure, Any]:
    """The 6 × 3 figure, drawn once into a PNG (18 panels take seconds to lay out); (figure, renderer)."""
    if not _grid:
        doc = grid_doc(capsys)
        fig = htab_mem_figure(doc["results"], context=doc)
        canvas = FigureCanvasAgg(fig)
        png = tmp_path_factory.mktemp("grid") / "grid.png"
        canvas.print_png(str(png))
        _grid.update(fig=fig, renderer=canvas.get_renderer(), png=png)
    return _grid["fig"], _grid["renderer"]


def compare_doc() -> dict[str, Any]:
    """A ``bpfmem compare --json`` document, shaped like one captured on Linux 6.18 (2 CPUs, 2 kernel runs);
    the kernel may be absent where tests run."""
    def metric(model: float, kernel: list[float], res: float, inside: bool = True) -> dict[str, Any]:
        mean = sum(kernel) / len(kernel)
        return {"model": model, "kernel": kernel, "kernel_mean": mean, "kernel_min": min(kernel),
                "kernel_max": max(kernel), "resolution": res, "rel_error": (model - mean) / mean, "inside": inside}

    def case(uc: str, pol: str, f: float) -> dict[str, Any]:
        b = 8192.0
        return {"use_case": uc, "policy": pol, "kernel_errors": [{}, {}], "model_errors": {}, "metrics": {
            "create_bytes": metric(132936 * f, [135168 * f, 135168 * f], b),
            "steady_bytes": metric(152904 * f, [155648 * f, 155648 * f], b),
            "peak_bytes": metric(185976 * f, [188416 * f, 188416 * f], b),
            "at_last_delete_bytes": metric(152904 * f, [155648 * f, 155648 * f], b),
            "after_idle_bytes": metric(146040 * f * (1.5 if pol == "prealloc" else 1), [155648 * f, 147456 * f], b,
                                       inside=pol != "prealloc"),
            "after_poke_bytes": metric(179112 * f, [184320 * f, 180224 * f], b),
            "poke_release_ms": metric(249.9, [252.4, 65.7], 1.0),
            "ops_per_sec": metric(5194666.7, [1415040.0, 2632106.7], 0.0, inside=False)}}

    return {"tool": "bpfmem", "version": "0.1.0", "command": "compare",
            "params": {"use_case": "all", "policy": "all", "cpus": 2, "value_size": 8, "max_entries": None,
                       "batch": 64, "duration_s": 0.3, "idle_s": 0.3, "poke": 200, "seed": 0, "repeat": 2,
                       "driver": "syscall"},
            "model": {"profile": "reference-6.18-2cpu.json", "source": "bpfmem calibrate"},
            "kernel": {"backend": "kernel", "kernel": "6.18.44", "cpus": 2, "driver": "syscall", "memcg": "v1",
                       "usage_file": "memory.kmem.usage_in_bytes", "sample_interval_ms": 1.0, "seed": None,
                       "costs": "measured"},
            "cases": [case(uc, pol, i + 1.0) for i, uc in enumerate(USE_CASES[:2]) for pol in ("v6.6", "prealloc")],
            "element_charge": {"value_size": 8, "model": 103.8, "kernel": 103.8, "model_rounded": 104,
                               "kernel_rounded": 104, "exact": True}}


# --- the htab-mem grid ---------------------------------------------------------------------------------


def test_six_policies_by_three_use_cases_is_a_grid_not_a_row(capsys: pytest.CaptureFixture[str],
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """Rows are use cases, columns policies; every panel is big enough to read."""
    fig, renderer = grid_figure(capsys, tmp_path_factory)
    assert len(fig.axes) == 18
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        assert spec is not None and spec.get_geometry()[:2] == (3, 6)
    cells = {(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in fig.axes}
    assert cells == {(r, c) for r in range(3) for c in range(6)}
    for ax in fig.axes:
        col = ax.get_subplotspec().colspan.start
        assert ax.get_title(loc="left") == POLICIES[col]
        bb = ax.get_window_extent(renderer)
        assert bb.width / fig.dpi >= 2.2 and bb.height / fig.dpi >= 1.5
    row_headers = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text() in USE_CASES]
    assert row_headers == USE_CASES


def test_each_list_has_one_colour_in_every_panel(capsys: pytest.CaptureFixture[str],
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """A list is the same colour everywhere, no two lists share a colour, per-CPU lists are one band."""
    fig, _ = grid_figure(capsys, tmp_path_factory)
    colours: dict[str, set[str]] = {}
    for ax in fig.axes:
        for c in ax.collections:
            if isinstance(c, PolyCollection) and not c.get_label().startswith("_"):
                colours.setdefault(c.get_label(), set()).add(to_hex(c.get_facecolor()[0]))
    assert {"live elements", "free_llist (all CPUs)", "waiting_for_gp_ttrace", "pcpu_freelist"} <= set(colours)
    assert not any("/cpu" in label for label in colours)
    assert all(len(cs) == 1 for cs in colours.values()), colours
    firsts = [next(iter(cs)) for cs in colours.values()]
    assert len(set(firsts)) == len(firsts), colours
    legend = {t.get_text(): to_hex(h.get_facecolor()) for t, h in zip(fig.legends[0].texts,
                                                                         fig.legends[0].legend_handles)
              if t.get_text() in colours}
    assert legend == {label: next(iter(cs)) for label, cs in colours.items()}


def test_one_legend_outside_every_panel(capsys: pytest.CaptureFixture[str],
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    fig, renderer = grid_figure(capsys, tmp_path_factory)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    leg = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not leg.overlaps(ax.get_window_extent(renderer)), ax.get_title(loc="left")
    labels = [t.get_text() for t in fig.legends[0].texts]
    assert "memcg charge (modelled)" in labels and "phase: run" in labels and "phase: poke" in labels


def test_title_names_the_parameters(capsys: pytest.CaptureFixture[str],
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    doc = grid_doc(capsys)
    title = grid_figure(capsys, tmp_path_factory)[0].get_suptitle()
    for part in ("htab-mem", *USE_CASES, "2 CPUs", "value 8 B", "max_entries 8192", "batch 64", "run 0.02 s",
                 "idle 0.02 s", "backend model", "modelled"):
        assert part in title, part
    assert htab_mem_figure(doc["results"][:1], title="my heading").get_suptitle().startswith("my heading\n")


def test_phase_labels_fit_their_strip_and_do_not_overlap(capsys: pytest.CaptureFixture[str],
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    fig, renderer = grid_figure(capsys, tmp_path_factory)
    names = {"run", "idle", "idle after poke", "drain", "poke", "create", "close"}
    for ax in fig.axes:
        labels = [t for t in ax.texts if isinstance(t, Text) and t.get_text() in names]
        assert {t.get_text() for t in labels} >= {"run", "idle"}
        boxes = [t.get_window_extent(renderer) for t in labels]
        axbox = ax.get_window_extent(renderer)
        assert all(axbox.x0 <= b.x0 and b.x1 <= axbox.x1 for b in boxes)
        assert not any(a.overlaps(b) for a, b in combinations(boxes, 2))


def test_kernel_results_plot_the_charge_and_memlock_as_lines(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    r = grid_doc(capsys)["results"][2]
    r.update(backend="kernel", modelled=False, breakdown=None, breakdown_series=None,
             phases=[["create", -0.002], ["run", 0.005], ["drain", 0.0251], ["idle", 0.0252], ["poke", 0.0452],
                     ["after_poke", 0.0453], ["close", 0.0653]])
    fig = htab_mem_figure([r])
    ax = fig.axes[0]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert {ln.get_label() for ln in ax.lines} >= {"memcg charge", "memlock"}
    assert "measured" in fig.get_suptitle()
    labels = [t.get_text() for t in fig.legends[0].texts]
    assert "memcg charge (measured)" in labels and "memlock (fdinfo, end of run)" in labels
    assert "phase: drain" in labels and "phase: poke" in labels
    plot_htab_mem([r], str(tmp_path / "kernel.svg"))
    assert (tmp_path / "kernel.svg").stat().st_size > 10_000


def test_the_6x3_grid_is_written(capsys: pytest.CaptureFixture[str],
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    grid_figure(capsys, tmp_path_factory)
    assert _grid["png"].read_bytes()[:8] == PNG and _grid["png"].stat().st_size > 50_000


def test_one_varying_dimension_is_a_near_square_grid(capsys: pytest.CaptureFixture[str]) -> None:
    """Six policies of one use case: 2 × 3, each panel titled by its policy."""
    doc = cli_doc(capsys, "bench", "htab-mem", "--policy", "all", "--use-case", "overwrite", *SHORT)
    fig = htab_mem_figure(doc["results"], context=doc)
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes} == {(2, 3)}
    assert [ax.get_title(loc="left") for ax in fig.axes] == POLICIES
    assert "use case overwrite" in fig.get_suptitle()


# --- replotting saved documents ----------------------------------------------------------------------


def test_replot_each_kind_of_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = {"bench htab-mem": cli_doc(capsys, "bench", "htab-mem", "--policy", "v6.6", "--use-case", "overwrite",
                                      *SHORT),
            "bench arena-vs-htab": cli_doc(capsys, "bench", "arena-vs-htab", "--elements", "300"),
            "compare": compare_doc()}
    for kind, doc in docs.items():
        src = tmp_path / f"{kind.replace(' ', '_')}.json"
        src.write_text(json.dumps(doc))
        out = tmp_path / f"{src.stem}.png"
        capsys.readouterr()
        assert main(["plot", str(src), "-o", str(out), "--title", "again"]) == 0
        assert kind in capsys.readouterr().out
        assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
        assert figure_for(doc, title="again").get_suptitle().startswith("again\n")
    assert replot(docs["compare"], tmp_path / "compare.svg") == "compare"
    assert (tmp_path / "compare.svg").read_text().lstrip().startswith("<?xml")


def test_compare_overlays_model_and_kernel_per_case() -> None:
    doc = compare_doc()
    fig = figure_for(doc)
    renderer = drawn(fig)
    assert len(fig.axes) == len(doc["cases"])
    leg = fig.legends[0]
    assert all(not leg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    labels = [t.get_text() for t in leg.texts]
    assert {"model (modelled)", "kernel mean (measured)", "each kernel run",
            "model outside the kernel's range"} <= set(labels)
    title = fig.get_suptitle()
    assert "2 CPUs" in title and "Linux 6.18.44" in title and "model profile" in title


@pytest.mark.kernel
def test_a_real_compare_document_replots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ..kernel import require_kernel_backend
    require_kernel_backend()
    doc = cli_doc(capsys, "compare", "--use-case", "overwrite", "--duration", "0.1", "--idle", "0.1",
                  "--repeat", "1")
    assert replot(doc, tmp_path / "cmp.png") == "compare"


@pytest.mark.parametrize("doc,words", [
    ([], "a list, expected a JSON object"),
    ({}, "empty object"),
    ({"tool": "bpfmem"}, "no 'command' field"),
    ({"command": "bench self", "results": []}, "'bench self' has no plot"),
    ({"command": "bench htab-mem", "results": []}, "results: empty"),
    ({"command": "bench htab-mem", "results": [{"use_case": "overwrite", "policy": "v6.6"}]},
     "results[0].series: missing"),
    ({"command": "bench htab-mem", "results": [{"use_case": "o", "policy": "p", "series": [[0, 1], [2]]}]},
     "results[0].series[1]"),
    ({"command": "compare", "cases": [{"use_case": "o", "policy": "p"}]}, "cases[0].metrics: missing"),
    ({"command": "compare", "cases": [{"use_case": "o", "policy": "p", "metrics": {"peak_bytes": {"model": 1}}}]},
     "cases[0].metrics.peak_bytes.kernel: missing"),
    ({"command": "bench arena-vs-htab", "results": [{"structure": "htab", "backend": "model"}]},
     "results[0].bytes_per_element: missing"),
    ({"command": "bench arena-vs-htab", "results": [{"structure": "htab", "backend": "model",
                                                     "bytes_per_element": "many"}]}, "a string, expected a number"),
])
def test_a_document_that_cannot_be_plotted_names_what_is_wrong(doc: Any, words: str) -> None:
    with pytest.raises(ValueError) as e:
        document_kind(doc)
    assert words in str(e.value)


@pytest.mark.parametrize("text,words", [("", "empty"), ("  \n", "empty"), ('{"command": ', "not JSON")])
def test_text_that_is_not_a_document(text: str, words: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_document(text)
    assert words in str(e.value)


# --- the command line ----------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("case,option,words", [
    ("bad extension", "--output", "must end in .png, .svg or .pdf"),
    ("missing directory", "--output", "does not exist"),
    ("missing input", "RESULT.json", "no such file"),
    ("corrupt JSON", "RESULT.json", "not JSON"),
    ("empty input", "RESULT.json", "empty"),
    ("another command", "RESULT.json", "'bench self' has no plot"),
    ("wrong shape", "RESULT.json", "results[0].series: missing"),
    ("no output", "-o", "Missing option"),
])
def test_plot_errors_exit_2_with_one_line(case: str, option: str, words: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "good.json", json.dumps(compare_doc()))
    out = str(tmp_path / "out.png")
    args = {
        "bad extension": [good, "-o", str(tmp_path / "out.txt")],
        "missing directory": [good, "-o", str(tmp_path / "no" / "such" / "out.png")],
        "missing input": [str(tmp_path / "absent.json"), "-o", out],
        "corrupt JSON": [_write(tmp_path, "bad.json", '{"command": "compare", "cases": ['), "-o", out],
        "empty input": [_write(tmp_path, "empty.json", ""), "-o", out],
        "another command": [_write(tmp_path, "self.json", json.dumps({"command": "bench self", "results": []})),
                            "-o", out],
        "wrong shape": [_write(tmp_path, "shape.json", json.dumps(
            {"command": "bench htab-mem", "results": [{"use_case": "overwrite", "policy": "v6.6"}]})), "-o", out],
        "no output": [good],
    }[case]
    capsys.readouterr()
    rc = main(["plot", *args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("bpfmem:") and option in lines[0] and words in lines[0]
    assert not Path(out).exists()


def test_plot_reads_standard_input_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(compare_doc())))
    assert main(["plot", "-", "-o", str(tmp_path / "cmp.png")]) == 0
    assert "compare plot written" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["cmp.png"]
