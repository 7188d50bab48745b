"""One measurement, from outside: run a command (or a sequence of commands) as child
processes and print its wall time and peak RSS.

    python -S bench/measure.py STDOUT STDERR TIMEOUT -- cmd args... [--- cmd2 args...]

STDOUT is a file for the children's stdout ("-" = /dev/null), STDERR a file for their
stderr, TIMEOUT seconds for the whole sequence (0 = none). Prints one line:
``wall_s maxrss_kib rc failed_index timed_out`` (failed_index -1 = none failed).

bench/run.py starts one such wrapper per measurement, so ``getrusage(RUSAGE_CHILDREN)``
here sees only that command's processes: ``maxrss`` is the peak resident set of the
largest process among them (and the descendants they waited for). The wall time spans
spawn to exit of the children; the wrapper's own start-up is not in it.

The wrapper is kept small (``-S``, no imports beyond built-ins, ``posix_spawn``) because
Linux counts a child's resident pages from the moment it is forked: a child's peak RSS is
never below the wrapper's own RSS at spawn time (about 8 MB), whatever it later execs.
bench/run.py measures that floor (``/bin/true``) and prints it.
"""

import os
import resource
import signal
import sys
import time


def main() -> None:
    out_path, err_path, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rest = sys.argv[5:]  # after "--"
    cmds, cur = [], []
    for arg in rest:
        if arg == "---":
            cmds.append(cur)
            cur = []
        else:
            cur.append(arg)
    cmds.append(cur)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull if out_path == "-" else out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
    ]
    state = {"pid": 0, "timed_out": 0}

    def on_alarm(signum, frame):
        state["timed_out"] = 1
        if state["pid"]:
            os.kill(state["pid"], signal.SIGKILL)

    signal.signal(signal.SIGALRM, on_alarm)
    rc, failed = 0, -1
    t0 = time.perf_counter()
    if timeout > 0:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    for i, cmd in enumerate(cmds):
        try:
            state["pid"] = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=actions)
        except OSError as exc:
            with open(err_path, "a") as f:
                f.write(f"cannot run {cmd[0]}: {exc}\n")
            rc, failed = 127, i
            break
        _, status = os.waitpid(state["pid"], 0)
        state["pid"] = 0
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0 or state["timed_out"]:
            failed = i
            break
    wall = time.perf_counter() - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{wall!r} {usage.ru_maxrss} {rc} {failed} {state['timed_out']}")


if __name__ == "__main__":
    main()
