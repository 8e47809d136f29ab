"""Run state on disk: done markers, failures with attempts, reset of partial work."""

from __future__ import annotations

from pathlib import Path

from ghist_ray.cells import RunLayout


def test_done_markers_survive_odd_slide_ids(tmp_path: Path) -> None:
    layout = RunLayout(str(tmp_path))
    for sid in ("TCGA-A1-01", "a/b c", "ü%"):
        layout.write_json(layout.done_marker(sid), {"slide_id": sid})
    (Path(layout.path("state", "done")) / ".tmp-1-x.json").write_text("{}")  # in-flight write
    assert layout.done_slides() == {"TCGA-A1-01", "a/b c", "ü%"}


def test_failures_count_attempts_per_slide(tmp_path: Path) -> None:
    RunLayout(str(tmp_path), "run-1").record_failures(
        [{"slide_id": "a", "stage": "open", "error": "corrupt"}]
    )
    layout = RunLayout(str(tmp_path), "run-2")
    layout.record_failures(
        [
            {"slide_id": "a", "stage": "open", "error": "corrupt"},
            {"slide_id": "b", "stage": "tissue", "error": "no tissue"},
        ]
    )
    table = layout.failures()
    assert list(table.columns) == ["slide_id", "stage", "error", "attempt", "time"]
    assert table[["slide_id", "attempt"]].values.tolist() == [["a", 1], ["a", 2], ["b", 1]]
    assert str(table["time"].dt.tz) == "UTC"


def test_reset_forgets_partial_work_but_keeps_done_slides(tmp_path: Path) -> None:
    earlier = RunLayout(str(tmp_path), "run-1")
    earlier.write_json(earlier.slide_work("partial", "plan.json"), {})
    layout = RunLayout(str(tmp_path), "run-2")
    for sid in ("done", "partial"):
        for path in (layout.cells_file(sid), f"{layout.slide_dir(sid)}/qc.png"):
            with layout.target(path) as tmp:
                tmp.write_bytes(b"x")
    layout.write_json(layout.done_marker("done"), {})
    layout.write_json(layout.slide_work("partial", "plan.json"), {})
    layout.reset(pending={"partial"})
    assert Path(layout.cells_file("done")).exists()
    assert Path(layout.slide_dir("done"), "qc.png").exists()
    assert not Path(layout.cells_file("partial")).parent.exists()
    assert not Path(layout.slide_dir("partial")).exists()
    assert not Path(earlier.work()).exists()
    assert Path(layout.work()).exists()  # this run's own staging stays


def test_bad_tiles_are_recorded_once_however_often_a_task_retries(tmp_path: Path) -> None:
    layout = RunLayout(str(tmp_path), "run-1")
    bad = [{"tile_index": 3, "stage": "read", "error": "Bogus marker"}]
    layout.record_bad_tiles("s", bad)
    layout.record_bad_tiles("s", bad)  # a retried task
    layout.record_bad_tiles("s", [{"tile_index": 5, "stage": "model", "error": "OOM"}])
    assert len(layout.children(layout.slide_work("s", "bad"))) == 2
    assert sorted(layout.bad_tiles("s")) == [3, 5]


def test_slide_summary_rows_are_upserted(tmp_path: Path) -> None:
    layout = RunLayout(str(tmp_path), "run-1")
    layout.record_slides(
        [{"slide_id": "a", "status": "failed"}, {"slide_id": "b", "status": "done"}]
    )
    layout.record_slides(
        [{"slide_id": "a", "status": "failed"}, {"slide_id": "c", "status": "done"}]
    )
    RunLayout(str(tmp_path), "run-2").record_slides([{"slide_id": "a", "status": "done"}])
    assert layout.slides()[["slide_id", "status"]].values.tolist() == [
        ["a", "done"],
        ["b", "done"],
        ["c", "done"],
    ]


def test_two_runs_state_files_never_overwrite_each_other_lease(tmp_path: Path) -> None:
    """Each run appends to files of its own: a second run's writes lose nothing."""
    first, second = RunLayout(str(tmp_path), "run-1"), RunLayout(str(tmp_path), "run-2")
    first.record_failures([{"slide_id": "a", "stage": "open", "error": "x"}])
    second.record_failures([{"slide_id": "b", "stage": "open", "error": "y"}])
    first.record_failures([{"slide_id": "c", "stage": "open", "error": "z"}])
    assert sorted(first.failures()["slide_id"]) == ["a", "b", "c"]
    assert first.work() != second.work()


def test_run_json_keeps_the_history_of_runs_provenance(tmp_path: Path) -> None:
    layout = RunLayout(str(tmp_path), "run-1")
    layout.record_run({"run_id": "run-1", "done": 2})
    RunLayout(str(tmp_path), "run-2").record_run({"run_id": "run-2", "done": 1})
    record = layout.read_json(layout.path("state", "run.json"))
    assert record["run_id"] == "run-2"
    assert [r["run_id"] for r in record["history"]] == ["run-1"]
