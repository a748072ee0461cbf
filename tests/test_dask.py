"""heapscope.dask on a real LocalCluster(n_workers=2, processes=True): tasks
allocating known sizes on chosen workers are found in the merged capture
under the right worker's frame and the right task prefix's label; a worker
killed mid-run keeps what its capture held. The workers' temp dir is not
the client's (the nannies start them with their own TMPDIR), as on another
host: what a killed worker left comes back over Dask's comms, not from a
directory the client can read. One subprocess runs every scenario on one
cluster (task functions in __main__ travel by value)."""

import json
import os
import re
import sys

import pytest

from capture_helpers import heapscope_cli, run_script, write_script

pytest.importorskip("distributed", reason="heapscope.dask profiles Dask clusters: needs distributed")

SCENARIOS = """
import glob
import json
import os
import signal
import sys
import socket
import tempfile
import time

from distributed import Client, LocalCluster, wait

import heapscope.dask


def make_table(size):
    return bytearray(size)           # @table


def make_index(size):
    return bytearray(size)           # @index


def doomed(size):
    global held
    held = bytearray(size)           # @doomed
    return size


def captures_in(directory):
    return sorted(os.path.relpath(path, directory)
                  for path in glob.glob(os.path.join(directory, "heapscope-dask-*", "*.bin")))


if __name__ == "__main__":
    output = sys.argv[1]
    workers_tmp, run_directory = os.path.join(output, "workers-tmp"), os.path.join(output, "run-directory")
    os.makedirs(workers_tmp)
    assert tempfile.gettempdir() != workers_tmp
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      env={"TMPDIR": workers_tmp}) as cluster, Client(cluster) as client:
        info = client.scheduler_info()["workers"]
        first, second = sorted(info)
        names = {address: str(info[address]["name"]) for address in info}
        assert client.run(tempfile.gettempdir) == {first: workers_tmp, second: workers_tmp}
        with heapscope.dask.profile(client, output=os.path.join(output, "run"), sample=False,
                                    run_directory=run_directory) as result:
            table = client.submit(make_table, 5_000_000, key="make-table-1", workers=[first])
            index = client.submit(make_index, 3_000_000, key="make-index-7", workers=[second])
            wait([table, index])
            during = captures_in(run_directory)
        summary = {"path": result.path, "captures": result.captures, "killed": result.killed,
                   "first": [first, names[first]], "second": [second, names[second]],
                   "peaks": [[peak.worker, peak.bytes, peak.tasks] for peak in result.peaks],
                   "pids": client.run(os.getpid), "host": socket.gethostname(),
                   "run_directory": {"during": during, "after": glob.glob(os.path.join(run_directory, "*")),
                                     "workers_tmp": captures_in(workers_tmp)}}
        del table, index
        with heapscope.dask.profile(client, output=os.path.join(output, "killed"), sample=False) as killed:
            assert client.submit(doomed, 7_000_000, key="doomed-1", workers=[first]).result() == 7_000_000
            time.sleep(0.5)  # the capture's journal writes at most this long after
            pid = client.run(os.getpid, workers=[first])[first]
            written = captures_in(workers_tmp)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 40  # the nanny starts a new worker, which joins the run
            while time.monotonic() < deadline:
                now = set(client.scheduler_info()["workers"])
                if first not in now and len(now) == 2:
                    break
                time.sleep(0.1)
            restarted = (now - {first, second}).pop()
            table = client.submit(make_table, 2_000_000, key="after-restart-1", workers=[restarted])
            wait([table])
        summary["after_kill"] = {"path": killed.path, "captures": killed.captures, "killed": killed.killed,
                                 "restarted": restarted, "pid": pid, "written": written,
                                 "left": captures_in(workers_tmp) + captures_in(tempfile.gettempdir())}
        del table
        # memray_workers' arguments: raw captures, then each worker's own flame graph page.
        raw, pages = os.path.join(output, "raw"), os.path.join(output, "pages")
        with heapscope.dask.heapscope_workers(raw, report_args=False):
            client.submit(make_table, 1_000_000, key="make-table-2").result()
        with heapscope.dask.heapscope_workers(pages, workers=1):
            client.submit(make_index, 1_000_000, key="make-index-2").result()
        summary["raw"] = sorted(os.listdir(raw))
        summary["pages"] = sorted(os.listdir(pages))
    print(json.dumps(summary))
"""


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dask")
    lines = write_script(directory / "scenarios.py", SCENARIOS)
    # About 15 s on an idle machine; a loaded one (a cluster of 2 processes, a kill and a restart) takes longer.
    result = run_script(directory / "scenarios.py", directory, timeout=240, cwd=directory)
    return directory, lines, json.loads(result.stdout.strip().splitlines()[-1])


def collapsed(directory, capture):
    """[(frames, bytes)] of a capture's peak (heapscope transform, as a user runs it)."""
    output = directory / "collapsed.txt"
    result = heapscope_cli("transform", "--format", "collapsed", "-f", "-o", output, capture, cwd=directory)
    assert result.returncode == 0, result.stderr
    return [(stack.split(";"), int(size)) for stack, size in
            (line.rsplit(" ", 1) for line in output.read_text().splitlines())]


def test_tasks_are_attributed_to_their_worker_and_prefix(scenarios):
    directory, lines, summary = scenarios
    rows = collapsed(directory, summary["path"])
    found = {}
    for frames, size in rows:
        if size in (5_000_001, 3_000_001):
            found[size] = frames
    table, index = found[5_000_001], found[3_000_001]
    for frames, (address, name), prefix, marker in ((table, summary["first"], "make-table", "table"),
                                                    (index, summary["second"], "make-index", "index")):
        assert frames[0].startswith("[process] ") and address in frames[0] and f"worker {name} at" in frames[0]
        assert frames[1].startswith(f"[label] {prefix} (<label>:0)"), frames[:3]
        # Functions of __main__ travel by value: cloudpickle names their file <dynamic-code>.
        assert frames[-1] == f"make_{marker} (<dynamic-code>:{lines[marker]})", frames[-1]
    assert sorted(summary["captures"]) == sorted([summary["first"][1], summary["second"][1]])
    assert summary["killed"] == []
    # run_directory= is where the workers wrote (not their temp dir), each as <name>@<host>-<pid>.bin; on exit
    # each sent its capture and removed it.
    host = summary["host"]
    assert [os.path.basename(path) for path in summary["run_directory"]["during"]] == sorted(
        f"{name}@{host}-{summary['pids'][address]}.bin" for address, name in (summary["first"], summary["second"]))
    assert summary["run_directory"]["after"] == [] and summary["run_directory"]["workers_tmp"] == []
    peaks = {worker: (size, tasks) for worker, size, tasks in summary["peaks"]}
    assert peaks[summary["first"][1]][1]["make-table"] >= 5_000_001
    assert peaks[summary["second"][1]][1]["make-index"] >= 3_000_001
    assert "make-index" not in peaks[summary["first"][1]][1]


def test_summary_and_flamegraph_read_the_merged_capture(scenarios):
    directory, _lines, summary = scenarios
    result = heapscope_cli("summary", summary["path"], cwd=directory)
    assert result.returncode == 0, result.stderr
    assert "heapscope summary: 2 processes" in result.stdout
    page = directory / "flamegraph.html"
    result = heapscope_cli("flamegraph", "-f", "-o", page, summary["path"], cwd=directory)
    assert result.returncode == 0, result.stderr
    assert "[label] make-table" in page.read_text()


def test_a_killed_worker_keeps_what_its_capture_held(scenarios):
    directory, lines, summary = scenarios
    after = summary["after_kill"]
    # It wrote in its own temp dir, which the client does not look at: it came back over Dask's comms,
    # sent by a process of its host still running, which removed it there.
    assert len(after["killed"]) == 1, after
    name = summary["first"][1]
    assert f"{name}@{summary['host']}-{after['pid']}.bin" in [os.path.basename(path) for path in after["written"]]
    assert os.path.basename(after["killed"][0]) == f"{name}@{summary['host']}-{after['pid']}.bin"
    assert after["left"] == [], after
    rows = collapsed(directory, after["killed"][0])
    doomed = [frames for frames, size in rows if size == 7_000_001]
    assert doomed and doomed[0][0] == "[label] doomed (<label>:0)"
    assert doomed[0][-1] == f"doomed (<dynamic-code>:{lines['doomed']})"
    # The merged capture has it too, with the surviving worker and the restarted one.
    merged = collapsed(directory, after["path"])
    assert any(size == 7_000_001 and frames[1] == "[label] doomed (<label>:0)" for frames, size in merged)
    # The worker that took its place joined during the run: profiled from then on.
    assert len(after["captures"]) == 2, after
    assert any(size == 2_000_001 and after["restarted"] in frames[0] and frames[1] == "[label] after-restart (<label>:0)"
               for frames, size in merged)


def test_importing_without_distributed_says_what_is_missing(tmp_path):
    script = tmp_path / "no_distributed.py"
    write_script(script, """
        import sys
        sys.modules["distributed"] = None  # as if it were not installed
        import heapscope.dask
        try:
            heapscope.dask.profile(object()).__enter__()
        except ImportError as error:
            print(error)
    """)
    result = run_script(script)
    assert "heapscope.dask needs Dask's distributed scheduler, which is not installed: pip install distributed" \
        in result.stdout


def test_heapscope_workers_takes_memray_workers_arguments(scenarios):
    directory, _lines, summary = scenarios
    names = sorted([summary["first"][1], summary["second"][1]])
    assert summary["raw"] == [f"{name}.bin" for name in names]
    assert len(summary["pages"]) == 1 and summary["pages"][0].endswith(".html")
    page = (directory / "pages" / summary["pages"][0]).read_text()
    assert page.startswith("<!DOCTYPE html>") and "Temporal flame graph" in page
    for name in names:
        assert collapsed(directory, directory / "raw" / f"{name}.bin")  # each a capture the reports read


def test_only_captures_of_dead_writers_on_this_host_are_taken(tmp_path):
    """What a process of a worker's host sends back for the dead workers: the
    captures whose writer is gone (reaped, or a zombie its nanny has not
    reaped yet), never one whose writer still runs, nor another host's (a
    run directory on a shared filesystem); each taken file is removed."""
    import socket
    import subprocess
    import time

    import psutil

    import heapscope.dask

    run = tmp_path / "heapscope-dask-r1"
    run.mkdir()
    host = socket.gethostname()
    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)  # it exits; not waited for, it stays a zombie
    assert psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE
    files = {f"0@{host}-{reaped.pid}.bin": b"reaped", f"1@{host}-{zombie.pid}.bin": b"zombie",
             f"2@{host}-{os.getpid()}.bin": b"live", f"3@elsewhere-{reaped.pid}.bin": b"other host",
             "notes.txt": b"not a capture"}
    for name, data in files.items():
        (run / name).write_bytes(data)
    answer = heapscope.dask._collect_dead("r1", run_directory=str(tmp_path))
    zombie.wait()
    assert answer == {"directory": str(run), "captures": [(f"0@{host}-{reaped.pid}.bin", b"reaped"),
                                                         (f"1@{host}-{zombie.pid}.bin", b"zombie")]}
    assert sorted(path.name for path in run.iterdir()) == sorted(
        [f"2@{host}-{os.getpid()}.bin", f"3@elsewhere-{reaped.pid}.bin", "notes.txt"])


def test_run_directory_must_be_an_absolute_path():
    import heapscope.dask

    # Each worker resolves it on its own host: a relative path would mean a different place in each.
    with pytest.raises(ValueError, match="run_directory must be an absolute path .*'profiles'"):
        heapscope.dask.profile(object(), run_directory="profiles").__enter__()
    with pytest.raises(TypeError, match="run_directory must be a path or None, not int"):
        heapscope.dask.profile(object(), run_directory=3).__enter__()
