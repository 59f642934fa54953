"""ray_start's shim around Ray's wait for a new raylet (GCS's GetNode asks once a second): it gives Ray's own answer,
and Ray is left as it was afterwards."""
from __future__ import annotations


def test_the_shim_finds_the_node_as_ray_does_and_is_gone_after(ray_session):
    from ray._private import services

    from posetalk_data.ray_start import raylet_noticed_at_once

    context = ray_session.get_runtime_context()
    gcs, node = context.gcs_address, context.get_node_id()
    original = services.get_node
    with raylet_noticed_at_once():
        assert services.get_node is not original        # in effect while a local Ray starts
        found = services.get_node(gcs, node)
    assert services.get_node is original
    assert found == original(gcs, node) and found["node_manager_port"] > 0


def test_wait_ready_returns_once_the_video_workers_have_set_up(ray_session):
    """The build's background imports wait for this, so they do not share the CPUs with the workers' start."""
    from posetalk_data.config import load_config
    from posetalk_data.runner import WorkerPool

    pool = WorkerPool(load_config(None, ["facetrack.crop_size=128"]), workers=1, videos=1)
    try:
        pool.wait_ready()
        _, waiting = ray_session.wait(pool.setup_refs, num_returns=len(pool.setup_refs), timeout=0)
        assert len(pool.setup_refs) == 1 and not waiting
    finally:
        pool.close()
    pool.wait_ready()       # a closed pool: nothing to wait for, no error
