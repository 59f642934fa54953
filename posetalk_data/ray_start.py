"""How a build gets its Ray: a local one of its own, or the cluster at --ray-address; started beside the driver's
listing of its sources, and ended by whoever started it (the worker pool, or a command that stops before
building)."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
QUICK_S = 0.3     # a listing this quick needs no Ray started beside it
owned = threading.Event()      # set while a Ray this module started (not one the caller started) is up
# A starting raylet connects to its object store at once and, if the store's socket is not up yet (about every other
# start here), retries a second later: 1 s of a 3 s start. Retrying every 0.1 s, 100 times, keeps the 10 s patience.
QUICK_CONNECT = {"raylet_client_connect_timeout_milliseconds": 100, "raylet_client_num_connect_attempts": 100}
REGISTER_WAIT_S = 30    # Ray's own patience for a new raylet (raylet_start_wait_time_s)


def ensure_ray(address: str | None, num_cpus: int | None):
    """This process's Ray: the one up already, else the cluster at `address`, else a new local one."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # "local": a Ray of its own; a bare ray.init() joins whatever cluster runs on this machine (a `ray start`,
            # someone's test cluster) and loses it when that one stops
            with raylet_noticed_at_once():
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         _system_config=QUICK_CONNECT)
        owned.set()
    return ray


@contextlib.contextmanager
def raylet_noticed_at_once():
    """ray.init learns that its new raylet is up from GCS's GetNode, which asks once a second (C++, a fixed sleep):
    a raylet registered just after an ask cost a second, in about half of the starts here. Asking the node table
    every 20 ms first (a fraction of a millisecond each) makes GetNode find it at once. Where Ray's internals differ
    from these, Ray's own wait is left as it is."""
    try:
        from ray._private import services
        from ray._raylet import GcsClient

        original = services.get_node
    except (ImportError, AttributeError):
        yield
        return

    def get_node(gcs_address, node_id):
        try:
            client, deadline = GcsClient(address=gcs_address), time.monotonic() + REGISTER_WAIT_S
            while time.monotonic() < deadline and node_id not in {n.hex() for n in client.get_all_node_info(timeout=1)}:
                time.sleep(0.02)
        except Exception:       # Ray's own wait follows in any case
            pass
        return original(gcs_address, node_id)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = original


def start_ray_beside(work: Callable[[], T], *, address: str | None, workers: int | None) -> T:
    """`work()` (the driver's own preparation: listing the sources, a dataset's metadata, the demo's videos) in a
    thread while Ray starts in this one (Ray wants the main thread), so a command waits for the longer of the two,
    not their sum. A quick `work` (or one failing at once: a mistyped folder) is waited for first, so a user's
    mistake is told without starting Ray; if `work` fails later, a Ray started here is ended again. workers=0 (no
    Ray): just `work()`."""
    if workers == 0:
        return work()
    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as prepare:
        future = prepare.submit(work)
        try:
            return future.result(timeout=QUICK_S)
        except TimeoutError:
            pass
        try:
            ensure_ray(address, None)
        finally:
            try:
                result = future.result()
            except BaseException:
                end_ray()
                raise
    return result


def end_ray() -> None:
    """End a Ray this module started and no pool has ended yet (a command that stops before building)."""
    if owned.is_set():
        import ray

        owned.clear()
        ray.shutdown()


def default_workers(address: str | None = None) -> int:
    """One worker per CPU of the cluster (local: this machine)."""
    if address:
        ray = ensure_ray(address, None)
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, os.cpu_count() or 1)
