"""pspnet.launch.py restarts a node that exited with code 3 boundedly, with backoff, via one handler.

Issue 22 f: it restarted forever every 2 s, adding an exit handler each time.

The launch description is evaluated with launch's own API and its exit handler is fed
ProcessExited events, as the launch service would, so no process runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


from launch import LaunchContext  # noqa: E402
from launch.actions import LogInfo, OpaqueFunction, RegisterEventHandler, TimerAction  # noqa: E402
from launch.events.process import ProcessExited  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "pspnet.launch.py"


def _load():
    spec = importlib.util.spec_from_file_location("pspnet_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _context(**args):
    ctx = LaunchContext()
    defaults = {"params_file": str(LAUNCH_FILE.parents[1] / "config" / "pspnet.yaml"), "extra_params_file": "",
                "image_topic": "image", "camera_info_topic": "camera_info", "namespace": "", "checkpoint": "",
                "use_sim_time": "false", "respawn": "true", "max_respawns": "3", "lifecycle": "false",
                "autostart": "true"}
    defaults.update(args)
    ctx.launch_configurations.update(defaults)
    return ctx


def _exited(action, code):
    return ProcessExited(action=action, name="segmentation_node-1", cmd=["segmentation_node"], cwd=None,
                         env=None, pid=1234, returncode=code)


def test_backoff_doubles_to_a_cap_gives_up_and_resets_after_a_stable_run():
    policy = _load().RespawnPolicy(6)
    assert [policy.next_delay(1.0) for _ in range(7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, None]
    assert policy.next_delay(120.0) == 2.0  # it ran 2 minutes: a recovery, the count starts afresh


def test_one_exit_handler_and_bounded_restarts():
    module = _load()
    ctx = _context(max_respawns="3")
    actions = module._node(ctx)
    handlers = [a for a in actions if isinstance(a, RegisterEventHandler)]
    assert len(handlers) == 1
    handler = handlers[0].event_handler
    node = next(a for a in actions if getattr(a, "pspnet_respawnable", False))

    delays = []
    for _ in range(4):
        event = _exited(node, 3)
        assert handler.matches(event)
        result = handler.handle(event, ctx)
        timers = [a for a in result if isinstance(a, TimerAction)]
        if not timers:
            text = " ".join(s.perform(ctx) for a in result if isinstance(a, LogInfo) for s in a.msg)
            assert "not restarting" in text, text
            break
        delays.append(float(timers[0].period[0].perform(ctx)) if isinstance(timers[0].period, list)
                      else float(timers[0].period))
        # the restart itself: the new node, and no further handler
        (start,) = [a for a in timers[0].actions if isinstance(a, OpaqueFunction)]
        new_actions = start.execute(ctx)
        assert not [a for a in new_actions if isinstance(a, RegisterEventHandler)]
        node = next(a for a in new_actions if getattr(a, "pspnet_respawnable", False))
    assert delays == [2.0, 4.0, 8.0]

    # a clean exit or a configuration error (2) is not restarted
    assert handler.handle(_exited(node, 0), ctx) is None
    assert handler.handle(_exited(node, 2), ctx) is None


def test_respawn_false_registers_no_handler():
    actions = _load()._node(_context(respawn="false"))
    assert not [a for a in actions if isinstance(a, RegisterEventHandler)]
